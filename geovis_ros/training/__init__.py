"""geovis_ros.training."""
