"""Every model module is imported here so that ``import lemore`` registers all of them."""

from lemore.models import lemore as lemore
from lemore.models import lraspp as lraspp
from lemore.models import seaformer as seaformer
from lemore.models import segformer as segformer
from lemore.models import topformer as topformer

__all__ = ["lemore", "lraspp", "seaformer", "segformer", "topformer"]
