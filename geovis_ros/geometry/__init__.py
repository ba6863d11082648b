"""Camera model and rigid-body geometry (numpy, float64 poses, OpenCV optical frame)."""
