"""geovis_ros.ros."""
