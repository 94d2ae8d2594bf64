"""downpool: downscale images with the pooling methods of the deep-learning literature.

>>> import downpool
>>> out = downpool.downscale(image, "softpool", kernel_size=2)   # doctest: +SKIP

Importing downpool does not import Numba: the kernels are compiled (or loaded
from Numba's cache) on the first call of each method.
"""

from .api import DeviceUnavailableError, downscale
from .methods import METHODS, MethodSpec, Param

__all__ = ["downscale", "METHODS", "MethodSpec", "Param", "DeviceUnavailableError", "__version__"]
__version__ = "0.1.0"
