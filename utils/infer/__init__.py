"""Running LRRNet (``inference.py``): the device and dtype (``device``), prediction with batching and tiles and
detection of targets (``predict``), streaming frames and videos (``runner``), the output files (``writers``),
the run record that writes and reads an output folder (``record``) and the ONNX backend (``onnx``)."""
