"""geovis_ros.inference."""
