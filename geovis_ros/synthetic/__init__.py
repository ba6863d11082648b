"""geovis_ros.synthetic: the synthetic world with exact ground truth (scenes, textures, trajectories, renderer)."""
