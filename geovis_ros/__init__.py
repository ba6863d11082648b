"""geovis_ros: monocular depth, optical flow, visual odometry and fused mapping for ROS 2.

Only ``geovis_ros.nodes`` and ``geovis_ros.ros`` import rclpy; everything else runs without ROS.
"""

__version__ = "0.1.0"
