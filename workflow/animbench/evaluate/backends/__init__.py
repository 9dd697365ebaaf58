"""The keypoint-detector and identity-embedder backends of optional libraries and their own
networks (face-alignment, openpifpaf and its worker, FaceNet and re-id). Each module registers
its backends with ``animbench.evaluate.detectors`` when imported; the registry imports them
lazily, the first time a name is asked for, so importing ``animbench.evaluate`` loads none."""
