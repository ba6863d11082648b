"""Test-wide setup: DDS stays on this machine, on a domain private to this test run."""

import os
import random

# Set before any test imports rclpy: discovery never multicasts beyond localhost, and a
# private domain keeps parallel runs (and other users' nodes) from talking to ours.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
