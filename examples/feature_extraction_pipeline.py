"""From a trained network to an OOD detector in one Pipeline
=========================================================

Train a small CNN on digits 0-4 with skorch, then chain

    TorchFeatureExtractor (penultimate layer) -> EnergyDetector (the CNN's own linear head)

in a scikit-learn Pipeline that takes raw digit rows, and measure how well it tells digits
5-9 (never seen in training) from held-out digits 0-4. Runs in a few seconds on a CPU.
"""

# sphinx_gallery_thumbnail_path = "_static/thumbnails/feature_extraction_pipeline.png"

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from skorch import NeuralNetClassifier

from sklearn_reclag import OOD_LABEL, EnergyDetector
from sklearn_reclag.datasets import DigitsCNN
from sklearn_reclag.features import TorchFeatureExtractor, linear_head
from sklearn_reclag.metrics import fpr_at_tpr, ood_auroc

# Digits 0-4 are in distribution; 5-9 play the unknown inputs met after deployment.
X, y = load_digits(return_X_y=True)
X_id, y_id, X_ood = X[y < 5], y[y < 5], X[y >= 5]
X_train, X_test, y_train, y_test = train_test_split(
    X_id, y_id, test_size=0.3, stratify=y_id, random_state=0
)

# A small CNN trained with skorch. DigitsCNN takes (n, 1, 8, 8) images in 0..16.
net = NeuralNetClassifier(
    DigitsCNN,
    module__n_classes=5,
    criterion=torch.nn.CrossEntropyLoss,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    max_epochs=40,
    batch_size=64,
    train_split=None,
    verbose=0,
)
# Seed the initialisation and shuffling without changing the global torch random state.
with torch.random.fork_rng(devices=[]):
    torch.manual_seed(0)
    net.fit(X_train.reshape(-1, 1, 8, 8).astype(np.float32), y_train)

# The extractor feeds rows as 1x8x8 images and returns the penultimate features (the
# input of the CNN's last nn.Linear); the detector scores them with that same layer.
detector = make_pipeline(
    TorchFeatureExtractor(net, input_shape=(1, 8, 8)),
    EnergyDetector(head=linear_head(net)),
)
detector.fit(X_train, y_train)

accuracy = np.mean(net.predict(X_test.reshape(-1, 1, 8, 8).astype(np.float32)) == y_test)
scores = detector.score_samples(np.vstack([X_test, X_ood]))
y_true = np.concatenate([y_test, np.full(len(X_ood), OOD_LABEL)])
print(f"CNN accuracy on held-out digits 0-4: {accuracy:.3f}")
print(f"Energy on CNN features, digits 5-9 as OOD: FPR95 = {fpr_at_tpr(y_true, scores):.3f}, "
      f"AUROC = {ood_auroc(y_true, scores):.3f}")
print(f"Rejected at the fitted threshold: {np.mean(detector.predict(X_ood) == -1):.1%} of "
      f"digits 5-9, {np.mean(detector.predict(X_test) == -1):.1%} of held-out digits 0-4")
