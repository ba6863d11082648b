"""geovis_ros.models."""
