"""Docstring fragments that several estimators share, and the decorator that fills them in.

A docstring names a fragment with a ``${name}`` placeholder (:class:`string.Template`);
:func:`fill_doc` substitutes it when the class is defined, and an unknown name raises at
import time, so a renamed fragment cannot silently leave a docstring unfilled. Fragments
are written for the indentation of a class docstring's sections (4 spaces): their first
line carries no indentation, the following lines do.
"""

from string import Template

_FRAGMENTS = {
    "head": """head : None, sklearn linear classifier or tuple (coef, intercept), default=None
        The linear head whose logits the score reads. None fits a softmax regression
        (:class:`~sklearn.linear_model.LogisticRegression`) on ``(X, y)``; an unfitted
        classifier is cloned and fitted; a fitted one (``coef_``, ``intercept_``) or a tuple
        with ``coef`` of shape (n_classes, n_features) is used as it is.""",
    "head_without_y": """
        With ``y=None`` and ``head=None``, every training row goes to one bank and no
        head is fitted; with ``y=None`` and a fitted head, its predictions are the
        labels.""",
    "contamination": """contamination : float in (0, 0.5], default=0.05
        Fraction of new in-distribution rows that ``predict`` should reject (0.05 is the
        FPR95 operating point). ``offset_`` is that quantile of training rows' scores
        as new rows would get them, for at most 1,000 training rows (a quantile needs
        no more; the fit stays linear in the rows): cross-fitted (a fold scored by the
        detector fitted on the other 4 of 5 folds, capped at the row's own score) for a
        detector that learns from the rows, leave-one-out for one that stores them (in
        closed form for Mahalanobis's named covariances), the rows' own scores for the logit detectors; it
        is kept off tied scores. The rows and the folds are chosen by the rows' content,
        so the rows fitted in any order give the same ``offset_``; copies of a row
        (repeated or duplicated data) count as one observation: one held-out score, in
        one fold, and left out together. See the user guide's thresholds page.""",
    "device": """device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
        Torch device; 'auto' uses CUDA when available. Resolved in ``fit``
        (``device_``).
    dtype : {'float32', 'float64'}, default='float32'
        Precision of the torch computation.
    batch_size : int or None, default=None
        Rows scored at a time (moved to the device together); bounds the memory of
        scoring. None: 4096 on a CPU, 16384 on a GPU.""",
    "routing": """routing : {'predicted', 'max', 'pooled'}, default='predicted'
        Which bank scores a row: 'predicted' the bank of the head's predicted class (as
        the papers do), 'max' the bank with the largest log-sum-exp, 'pooled' one bank of
        every memory (no classifier involved at scoring time).""",
    # The descriptions only: the lines above them, with the defaults, are the
    # estimators' own (their defaults differ).
    "energy": """'lse' scores ``(1/beta) * lse(beta * Xi_c v)``, the papers' score; 'full'
        also subtracts ``|v|^2 / 2`` (the whole negative Hopfield energy, an extension
        beyond the papers); 'density' (an extension too) scores
        ``(1/beta) * lse(-beta * |v - xi|^2 / 2)`` over the bank, i.e. 'full' with each
        memory's ``-beta |xi|^2 / 2`` inside the log-sum-exp: the scaled log-density of
        an isotropic Gaussian mixture (variance 1/beta) on the memories, which no longer
        favours memories (or rows) of large norm. For large beta it tends to minus half
        the squared distance to the nearest memory. 'lse' rewards the norm of v: on
        standardised tabular data it ranks outliers, which have larger norms, above
        the inliers.""",
    "metric": """The space the memories live in; the head always reads the raw features.
        'euclidean': the raw features. 'cosine': every row divided by its L2 norm,
        ``v / |v|`` (training rows, stored patterns, memories and queries alike).
        'mahalanobis': every row whitened, ``v -> Sigma^{+1/2} v``, with Sigma the
        shared within-class covariance of the training rows (of all rows without y),
        estimated as ``covariance`` says. With ``energy='density'`` the metric is the
        kernel's distance: with one mean per class and ``routing='max'``,
        'mahalanobis' is the Mahalanobis detector, and 'cosine' with a large beta
        tends to deep 1-NN on normalised features. The useful range of beta depends on
        the metric and the scale of the features (about 0.01-1 on raw features, 30-3000
        with 'cosine'); ``beta='auto'`` adapts to both.""",
    "covariance": """How the shared within-class covariance Sigma is estimated from the
        class-centred training rows (:mod:`sklearn.covariance`): 'empirical' the
        maximum-likelihood estimate (scatter / N, as Lee et al.'s code), 'ledoit_wolf'
        and 'oas' shrunk towards a scaled identity (better conditioned when features
        are many or some are dead), or any estimator with ``fit`` and ``covariance_``
        (cloned, fitted on the centred rows). Directions of zero variance are ignored
        (pseudo-inverse).""",
    "beta_auto": """'auto' sets ``beta_ = 4 / median_i d_i^2`` from the data, ``d_i`` the distance
        from stored pattern i to the nearest other stored pattern of its bank, in the
        space of ``metric`` (about 2000 patterns are queried): a Gaussian kernel whose
        standard deviation ``1/sqrt(beta)`` is half the typical gap between neighbouring
        patterns, whatever the metric and the scale of the features.""",
    "fitted_beta": """beta_ : float
        The inverse temperature used: ``beta``, or its value for ``beta='auto'``.
    whitening_ : ndarray of shape (n_features, n_features) or None
        ``Sigma^{+1/2}`` for ``metric='mahalanobis'``, else None (formed when read;
        scoring applies it from the eigenvectors and scales that fit keeps).""",
    "fitted_head": """classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the head's outputs.
    head_coef_ : ndarray of shape (n_classes, n_features)
        Weights of the head.
    head_intercept_ : ndarray of shape (n_classes,)
        Bias of the head.""",
    "fitted_common": """offset_ : float
        ``decision_function = score_samples - offset_``.
    device_ : str
        The resolved torch device.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit, when X has string column names.""",
    "fitted_banks": """memory_mask_ : ndarray of shape (n_banks, n_slots) of bool
        True on the slots of ``memories_`` that hold a memory.
    center_ : ndarray of shape (n_features,) or None
        The training rows' mean (float64), set where ``energy='density'`` reads
        distances on rows whose common offset is over ten times their spread
        (``|mean|^2 > 100 E|x - mean|^2``, unnormalised features): the density score
        does not change under a shift, but its float32 expansion ``|v|^2 + |xi|^2 -
        2 v.xi`` would cancel to noise, so the memories and every scored row are moved
        by minus ``center_`` first (``memories_`` then hold the memories minus
        ``center_``). None otherwise, and always for the 'lse' and 'full' energies
        (inner products, which a shift changes) and the cosine metric.
    classes_ : ndarray of shape (n_banks,) or None
        Class labels, in the order of the banks and of the head's outputs; None when
        fitted without y and head.
    head_coef_ : ndarray of shape (n_banks, n_features) or None
        Weights of the head (None without a head).
    head_intercept_ : ndarray of shape (n_banks,) or None
        Bias of the head (None without a head).
    device_ : str
        The resolved torch device.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit, when X has string column names.""",
}


def fill_doc(obj):
    """Class or function decorator: substitute the shared fragments into ``__doc__``.

    Raises
    ------
    KeyError
        If the docstring names a fragment that does not exist.
    """
    obj.__doc__ = Template(obj.__doc__).substitute(_FRAGMENTS)
    return obj
