"""geovis_ros.nodes."""
