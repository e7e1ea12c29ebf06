"""Every model module is imported here so that ``import lemore`` registers all of them."""

from lemore.models import lemore as lemore
from lemore.models import lraspp as lraspp
from lemore.models import segformer as segformer

__all__ = ["lemore", "lraspp", "segformer"]
