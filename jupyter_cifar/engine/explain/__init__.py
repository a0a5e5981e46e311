"""Why the model gave a picture its label: Grad-CAM heatmaps, drawn over the picture.

:func:`explain` returns, for each picture, a map of where the evidence for the predicted class (or a
class asked for) lies, at the picture's own pixel size; :func:`overlay` colours it over the picture and
:func:`write_overlays` writes one PNG per file (``jupyter cifar classify REF FILES --explain DIR``).

How a map is made (Grad-CAM, Selvaraju et al. 2017): the gradient of the class's score (its logit) with
respect to a convolutional feature map says how much each channel counts for that class; the channels,
weighted so, are summed and the negative part dropped. Four choices matter on 32x32 inputs, where the
last feature maps are tiny (3x3 in the presets, 1x1 in ``keras.applications`` models). Each was measured
on photos made from CIFAR-10 test images with the object at a third to a half of the frame
(``tests/photoset.py``; the figures are in ``tests/test_explain.py``): how often the map's peak falls in
the object's box, where chance (the box's share of the frame) is 0.15.

- Which maps (:data:`AUTO_RULE`). The deeper the map, the less of the object's position it keeps: plain
  Grad-CAM on the deepest map of 4x4 or more (the ``fast`` preset's 7x7) peaks in the box 0.2-0.3 of the
  time, on the first conv's 31x31 map 0.8. The automatic choice takes one map per resolution, the first
  at each (where a pooling or strided convolution lands), and averages their maps: each brings its own
  scale, and no layer has to be known by name. ``layer=`` names one or more layers instead.
- How channels are weighted (:data:`METHODS`). LayerCAM (Jiang et al. 2021), the default, weights each
  position by its own positive gradient instead of the map's mean: on the automatic maps 0.70-0.80,
  plain Grad-CAM 0.57-0.70. Grad-CAM++ peaked in the box as often on some layer sets but drew the same
  map whatever class was asked for (correlation 0.95 between the maps of the first and second class),
  which does not say why *this* label.
- Where each cell of a map lies on the picture. A cell's centre is not where resizing the map to the
  input would put it: valid convolutions and floor-rounding poolings shift and shrink the grid (the
  ``fast`` preset's 7x7 map has its centres at 2.5, 6.5, ..., 26.5 of 32, not 2.3 ... 29.7). The grid is
  worked out from the layers' kernel sizes, strides and paddings (:mod:`.geometry`), and each picture
  pixel is interpolated (bilinear) between the cells around it: 0.05-0.2 more peaks in the box than
  resizing the map.
- The picture's own size. The model sees the whole picture resized to its input (``fit="squish"``, so no
  part of the picture goes unseen); the map is computed back onto every pixel of the original.

Models with test-time augmentation built in (:func:`jupyter_cifar.engine.tta.with_tta`) are explained view by
view: each view (the picture, its mirror image, shifted copies) gets its own map, which is mapped back
through its view (the flip undone) and averaged with the weights the model gives the views' logits.
Mixed-precision models are explained through a float32 copy. Only the TensorFlow backend is supported.
"""

from .explainer import METHODS
from .heatmaps import explain, overlay, write_overlays
from .layers import AUTO_RULE

__all__ = ["AUTO_RULE", "METHODS", "explain", "overlay", "write_overlays"]
