"""The openpifpaf worker: runs inside the pose environment (``animbench pose-env``), never in
the main one, and serves ``animbench.evaluate.backends.openpifpaf_backend`` over its stdin and stdout.

It is started by file path, not as ``animbench.…``: the pose environment has only the standard
library, numpy, torch and openpifpaf, so this file must import nothing else.

Protocol (all integers little-endian uint64):

* start-up: the worker writes one line, ``ready {json}`` (versions) or ``error {message}``;
* request: ``<length><.npy bytes of uint8 [N, H, W, 3]>``; a length of 0 asks it to exit;
* reply: one line ``ok <length>`` followed by the .npy bytes of float32 [N, 17, 3] (x, y,
  confidence of every frame's highest-scoring person; all zero without a person), or one line
  ``error {message}`` after which the worker keeps serving.

Its stdout carries nothing but the protocol: anything openpifpaf or torch prints goes to stderr.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import struct
import sys
import traceback
import warnings

import numpy as np
import torch

NUM_KEYPOINTS = 17  # COCO-17
_LENGTH = struct.Struct("<Q")


def build(checkpoint: str | None, base_name: str, seed: int):
    """The network (on CPU, eval mode) and openpifpaf's default decoder for its heads.

    ``checkpoint`` is a local .pkl file (openpifpaf's own format: a pickled model); None builds
    ``base_name`` with openpifpaf's COCO-17 cif/caf heads and random weights (tests).
    """
    import openpifpaf

    torch.ops.openpifpaf.set_quiet(True)  # its C++ decoder logs every buffer resize otherwise
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):  # a path openpifpaf does not know would be downloaded
            raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
        # a pickled model, so torch.load(weights_only=False): the caller checked its sha256
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "You are using `torch.load`", FutureWarning)
            model, _ = openpifpaf.network.Factory(checkpoint=checkpoint).factory()
    else:
        torch.manual_seed(seed)
        head_metas = openpifpaf.plugins.coco.CocoKp().head_metas
        model, _ = openpifpaf.network.Factory(base_name=base_name).factory(head_metas=head_metas)
    model.eval()
    processor = openpifpaf.decoder.factory(model.head_metas)
    return model, processor


class Worker:
    def __init__(self, model, processor, device: torch.device) -> None:
        import openpifpaf

        self.model = model.to(device)
        self.processor = processor
        self.device = device
        # openpifpaf's Predictor preprocessing for one image (batch size 1, no resize): pad to
        # a multiple of 16 plus one, then ImageNet normalisation
        self.preprocess = openpifpaf.transforms.Compose(
            [
                openpifpaf.transforms.NormalizeAnnotations(),
                openpifpaf.transforms.CenterPadTight(16),
                openpifpaf.transforms.EVAL_TRANSFORM,
            ]
        )

    @torch.no_grad()
    def detect(self, frames: np.ndarray) -> np.ndarray:
        import PIL.Image

        out = np.zeros((len(frames), NUM_KEYPOINTS, 3), np.float32)
        if len(frames) == 0:
            return out
        images, metas = [], []
        for index, frame in enumerate(frames):
            image, _, meta = self.preprocess(
                PIL.Image.fromarray(frame), [], {"dataset_index": index}
            )
            images.append(image)
            metas.append(meta)
        # every frame of a clip has the same size, so the padded images stack into one batch
        batch = torch.stack(images)
        for index, (predictions, meta) in enumerate(
            zip(self.processor.batch(self.model, batch, device=self.device), metas)
        ):
            if predictions:
                best = max(predictions, key=lambda ann: ann.score)
                out[index] = best.inverse_transform(meta).data[:NUM_KEYPOINTS]
        return out


def _read_exact(stream, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("input closed")
    return data


def _send_line(out, line: str) -> None:
    out.write((" ".join(line.split()) + "\n").encode())  # always exactly one line
    out.flush()


def serve(worker: Worker, inp, out) -> None:
    while True:
        try:
            (length,) = _LENGTH.unpack(_read_exact(inp, _LENGTH.size))
        except EOFError:
            return
        if length == 0:
            return
        payload = _read_exact(inp, length)
        try:
            frames = np.load(io.BytesIO(payload), allow_pickle=False)
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(
                    f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {frames.shape}"
                )
            result = worker.detect(frames)
        except Exception as exc:  # reported to the caller, who raises it; keep serving
            traceback.print_exc(file=sys.stderr)
            _send_line(out, f"error {type(exc).__name__}: {exc}")
            continue
        buffer = io.BytesIO()
        np.save(buffer, result, allow_pickle=False)
        data = buffer.getvalue()
        _send_line(out, f"ok {len(data)}")
        out.write(data)
        out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="local openpifpaf .pkl checkpoint")
    parser.add_argument("--random-base", default=None, help="random weights on this base net")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto: CUDA when available")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)

    # the protocol owns the real stdout; fd 1 (print, C++ writes) goes to stderr from here on
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    inp = sys.stdin.buffer
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        if (args.checkpoint is None) == (args.random_base is None):
            raise ValueError("give exactly one of --checkpoint and --random-base")
        import openpifpaf

        model, processor = build(args.checkpoint, args.random_base, args.seed)
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        worker = Worker(model, processor, torch.device(device))
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        _send_line(out, f"error {type(exc).__name__}: {exc}")
        return 1
    info = {
        "device": str(worker.device),
        "openpifpaf": openpifpaf.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    _send_line(out, f"ready {json.dumps(info)}")
    serve(worker, inp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
