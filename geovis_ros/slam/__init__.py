"""geovis_ros.slam: the monocular SLAM front end (tracking, fusion, odometry) and back end (loops, pose graph, map)."""
