"""Published figures of NVIDIA's reference (DeepLearningExamples, TensorFlow2 EfficientNet v1), as data.

Transcribed from TensorFlow2/Classification/ConvNets/efficientnet_v1/README.md at commit
077c3882b610bf9b2b8df5f6bd566507ce469b96 (tensorflow:21.09-tf2-py3 NGC container, DGX A100 80GB and
DGX-1 V100 32GB). The reference's "Latency 90%/95%/99%" are means of the fastest 90/95/99% of the
batches, not percentiles, and its "Latency Avg" is batch size / throughput; ours are true percentiles.
Its "TF32" inference table on V100 is FP32 (V100 has no TF32).
"""
from __future__ import annotations

SOURCE = ("NVIDIA DeepLearningExamples, TensorFlow2/Classification/ConvNets/efficientnet_v1/README.md "
          "(commit 077c3882, tensorflow:21.09-tf2-py3)")
NATIVE_SIZE = {"efficientnet-b0": 224, "efficientnet-b4": 380}

# arch -> hardware -> GPUs -> {precision: images/s} (training, whole epochs of real ImageNet)
TRAIN_THROUGHPUT = {
    "efficientnet-b0": {
        "A100 80GB": {1: {"tf32": 1209, "amp": 3454}, 8: {"tf32": 9119, "amp": 20647},
                      16: {"tf32": 17815, "amp": 40644}},
        "V100 32GB": {1: {"fp32": 752, "amp": 868}, 8: {"fp32": 4504, "amp": 4880},
                      32: {"fp32": 15309, "amp": 18424}},
    },
    "efficientnet-b4": {
        "A100 80GB": {1: {"tf32": 165, "amp": 470}, 8: {"tf32": 1308, "amp": 3550},
                      32: {"tf32": 4782, "amp": 12908}, 64: {"tf32": 9473, "amp": 25455}},
        "V100 32GB": {1: {"fp32": 79, "amp": 211}, 8: {"fp32": 570, "amp": 1258},
                      32: {"fp32": 1855, "amp": 4325}, 64: {"fp32": 3568, "amp": 8643}},
    },
}

# arch -> hardware -> GPUs -> {precision: (top-1 %, hours to train)}
TRAIN_ACCURACY = {
    "efficientnet-b0": {
        "A100 80GB": {8: {"tf32": (77.60, 19.5), "amp": (77.59, 8.5)}, 16: {"tf32": (77.51, 10), "amp": (77.48, 4.5)}},
        "V100 32GB": {8: {"fp32": (77.67, 49.0), "amp": (77.69, 38.0)}, 32: {"fp32": (77.55, 11.5), "amp": (77.53, 10)}},
    },
    "efficientnet-b4": {
        "A100 80GB": {32: {"tf32": (82.98, 38), "amp": (83.13, 14)}, 64: {"tf32": (83.14, 19), "amp": (83.05, 7)}},
        "V100 32GB": {32: {"fp32": (82.64, 97.0), "amp": (82.88, 41.0)}, 64: {"fp32": (82.74, 50.0), "amp": (83.16, 20.5)}},
    },
}

# arch -> hardware -> precision -> batch -> (images/s, latency avg, 90%, 95%, 99% in ms), 1 GPU
INFERENCE = {
    "efficientnet-b0": {
        "A100 80GB": {
            "amp": {1: (110.97, 9.09, 9.02, 9.04, 9.09), 8: (874.91, 9.12, 9.04, 9.08, 9.12),
                    32: (2188.84, 14.62, 14.35, 14.43, 14.52), 1024: (9729.85, 105.24, 101.50, 103.20, 105.24)},
            "tf32": {1: (127.95, 7.88, 7.83, 7.84, 7.87), 8: (892.27, 8.97, 8.88, 8.91, 8.94),
                     32: (2185.02, 14.65, 14.33, 14.43, 14.54), 512: (5253.19, 97.46, 96.57, 97.03, 97.46)},
        },
        "V100 32GB": {
            "amp": {1: (97.53, 10.25, 10.11, 10.13, 10.21), 8: (752.72, 10.63, 10.49, 10.54, 10.59),
                    32: (1768.05, 18.10, 17.88, 17.96, 18.04), 512: (5399.88, 94.82, 92.85, 93.89, 94.82)},
            "fp32": {1: (97.01, 10.31, 10.17, 10.22, 10.28), 8: (649.79, 12.31, 12.16, 12.22, 12.28),
                     32: (1861.65, 17.19, 16.98, 17.03, 17.10), 256: (2829.34, 90.48, 89.80, 90.13, 90.43)},
        },
    },
    "efficientnet-b4": {
        "A100 80GB": {
            "amp": {1: (61.36, 16.30, 16.20, 16.24, 16.28), 8: (338.60, 23.63, 23.34, 23.46, 23.58),
                    32: (971.68, 32.93, 32.46, 32.61, 32.76), 128: (1497.21, 85.28, 83.01, 83.68, 84.70)},
            "tf32": {1: (60.54, 16.52, 16.34, 16.41, 16.49), 8: (366.82, 21.81, 21.48, 21.61, 21.75),
                     32: (642.78, 49.78, 49.41, 49.53, 49.65), 64: (714.55, 89.54, 89.00, 89.17, 89.34)},
        },
        "V100 32GB": {
            "amp": {1: (55.71, 17.95, 17.68, 17.93, 17.86), 8: (256.72, 31.16, 30.92, 31.02, 31.12),
                    16: (350.14, 45.75, 45.44, 45.57, 45.68), 64: (805.21, 79.46, 78.74, 78.86, 79.01)},
            "fp32": {1: (49.03, 20.40, 20.03, 20.18, 20.34), 8: (258.21, 30.98, 30.83, 30.89, 30.95),
                     16: (310.84, 51.47, 51.26, 51.34, 51.42), 32: (372.23, 85.97, 85.70, 85.79, 85.89)},
        },
    },
}


def hardware(environment: dict | None) -> str | None:
    """The reference's hardware label this environment matches ("A100 80GB", "V100 32GB"), if any."""
    gpus = (environment or {}).get("gpus") or []
    if not gpus:
        return None
    name, memory = gpus[0]["name"], gpus[0].get("memory_mib") or 0
    if "A100" in name and memory >= 70000:
        return "A100 80GB"
    if "V100" in name and memory >= 30000:
        return "V100 32GB"
    return None


def comparable(arch: str, image_size: int, environment: dict | None) -> str | None:
    """The hardware label when published figures exist for this arch, at its native size, on this hardware."""
    label = hardware(environment)
    if label and NATIVE_SIZE.get(arch) == image_size:
        return label
    return None
