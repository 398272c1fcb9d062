"""What to explain: one target type mapping a batched model output to one scalar per sample.

A target is framework-neutral. It computes with the array namespace of the output it is given
(NumPy, or the framework's own tensors on the model's device; see ``backends.arrays``):

* ``scores(output)``: the (N,) scores being explained, for reports and finite differences;
* ``seed(output)``: d(sum of scores)/d(output), the output-space seed of the vector-Jacobian product.
  Because every score is a function of the output alone, backpropagating this seed from the output
  gives exactly the gradient of the score with respect to anything upstream.

Resolved choices are NumPy until ``on(ops)`` moves them where the model runs, once per explanation,
so that a chunk loop builds its seeds without a copy between host and device.

Data-dependent choices (the predicted class, the predicted-pixel mask) are fixed once by
``resolve(output)`` on the unperturbed input, so finite differences and integration paths explain
the same quantity throughout.

``Custom(fn)`` is the one exception: ``fn`` receives the framework's own output tensor and returns
one score per sample, so it may use any differentiable operation of that framework.
"""

from .base import SATURATION, Target
from .classification import Class
from .detection import Detection
from .regression import Custom, Regression
from .segmentation import SegmentationRegion
from .sequence import Sequence
from .tasks import TASKS, for_task, infer_task, pinned, runner_up, target_for_output, task_of

__all__ = ["SATURATION", "TASKS", "Class", "Custom", "Detection", "Regression", "SegmentationRegion", "Sequence",
           "Target", "for_task", "infer_task", "pinned", "runner_up", "target_for_output", "task_of"]
