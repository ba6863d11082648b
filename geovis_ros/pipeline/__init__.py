"""geovis_ros.pipeline."""
