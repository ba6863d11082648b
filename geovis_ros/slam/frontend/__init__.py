"""geovis_ros.slam.frontend: direct and feature tracking, CNN-SLAM keyframe fusion, the odometry stage."""
