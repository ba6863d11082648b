"""geovis_ros.data."""
