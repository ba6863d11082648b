"""ROS 2 message <-> numpy conversions; import the modules directly.

image (Image), compressed (CompressedImage), camera_info (CameraInfo), pointcloud
(PointCloud2), poses (Pose/PoseStamped/TransformStamped/Odometry/Path), stamps (Time,
Header), results (pipeline results -> the output messages per topic), messages (the rclpy and
rosbags message factories the encoders build with), errors (ConversionError), qos (QoS
profiles), bench (``python -m geovis_ros.ros.bench``). Only qos imports rclpy at module
level; the others import message classes on first use, and run without ROS on rosbags messages.
"""
