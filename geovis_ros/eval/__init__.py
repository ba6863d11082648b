"""geovis_ros.eval."""
