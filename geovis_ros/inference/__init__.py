"""geovis_ros.inference: one Engine interface over TensorRT, PyTorch and ONNX Runtime.

engine (Engine, TensorSpec, ModelSpec, EngineConfig), select (create_engine, backend auto-selection),
cache (TensorRT engine cache), export (ONNX export and parity), preprocess (normalise, pad, resize,
intrinsics), bench / build_engines (the ``geovis bench`` and ``geovis build-engines`` commands).
Submodules are imported explicitly so that importing this package stays cheap.
"""
