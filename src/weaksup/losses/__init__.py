"""Loss functions and loss modules (pure torch; no Lightning)."""

from weaksup.losses.classification import BCELoss as BCELoss
from weaksup.losses.classification import ClassificationLoss as ClassificationLoss
from weaksup.losses.classification import CrossEntropyLoss as CrossEntropyLoss
from weaksup.losses.classification import HingeLoss as HingeLoss
from weaksup.losses.classification import MSELoss as MSELoss
from weaksup.losses.classification import SquaredHingeLoss as SquaredHingeLoss
from weaksup.losses.hinge import BinaryHingeFunction as BinaryHingeFunction
from weaksup.losses.hinge import CrammerSingerHingeFunction as CrammerSingerHingeFunction
from weaksup.losses.hinge import WestonWatkinsHingeFunction as WestonWatkinsHingeFunction
from weaksup.losses.hinge import binary_hinge as binary_hinge
from weaksup.losses.hinge import binary_squared_hinge as binary_squared_hinge
from weaksup.losses.hinge import multiclass_hinge as multiclass_hinge
from weaksup.losses.hinge import multiclass_squared_hinge as multiclass_squared_hinge
from weaksup.losses.inversion import MultiscaleInversionLoss as MultiscaleInversionLoss
from weaksup.losses.inversion import default_entropy_weight as default_entropy_weight
from weaksup.losses.inversion import (
    default_reconstruction_weights as default_reconstruction_weights,
)
from weaksup.losses.inversion import entropy_from_logits as entropy_from_logits
from weaksup.losses.inversion import reconstructions as reconstructions
