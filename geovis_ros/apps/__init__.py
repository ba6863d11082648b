"""geovis_ros.apps: the geovis commands that span the whole system (odometry, process-bag, vo-bench, demo, predict)."""
