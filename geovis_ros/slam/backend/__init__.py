"""geovis_ros.slam.backend: loop detection, the keyframe pose graph and the bounded fused map."""
