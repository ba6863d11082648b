"""ROS 2 message <-> numpy conversions; import the modules directly.

image (Image), compressed (CompressedImage), camera_info (CameraInfo), pointcloud
(PointCloud2), poses (Pose/PoseStamped/TransformStamped/Odometry/Path), stamps (Time),
errors (ConversionError), bench (``python -m geovis_ros.ros.bench``).
"""
