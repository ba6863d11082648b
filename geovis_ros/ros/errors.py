"""The one exception type of the message conversions."""

from geovis_ros.errors import GeovisError


class ConversionError(GeovisError, ValueError):
    """A message or array that cannot be converted; the message names the field at fault.

    Raised for unsupported encodings, inconsistent sizes (height, width, step, data length),
    non-finite or non-positive calibration values, malformed point cloud layouts and
    non-rigid poses. Numpy reshape or broadcasting errors never escape the conversions.
    """
