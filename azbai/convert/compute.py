"""Batch AI VM sizes and containers → what Azure ML can run today.

Two explicit tables: retired GPU VM sizes with a current replacement of the same GPU count (and InfiniBand where the
old size had it), and retired framework images with the packages a current image needs instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class VmSize:
    """What azbai knows of a VM size."""

    name: str
    gpus: int
    gpu: str
    infiniband: bool = False
    retired: str | None = None
    replacement: str | None = None


_NC_RETIRED = "Azure retired the NC, NCv2, ND and NV series on 2023-09-06"
_NCV3_RETIRED = "Azure retired the NCv3 series on 2025-09-30"

#: upper-case VM size → facts; the current sizes first, then the retired Batch AI ones
VM_SIZES: dict[str, VmSize] = {
    s.name: s
    for s in (
        VmSize("STANDARD_NC4AS_T4_V3", 1, "NVIDIA T4"),
        VmSize("STANDARD_NC8AS_T4_V3", 1, "NVIDIA T4"),
        VmSize("STANDARD_NC16AS_T4_V3", 1, "NVIDIA T4"),
        VmSize("STANDARD_NC64AS_T4_V3", 4, "NVIDIA T4"),
        VmSize("STANDARD_NC24ADS_A100_V4", 1, "NVIDIA A100"),
        VmSize("STANDARD_NC48ADS_A100_V4", 2, "NVIDIA A100"),
        VmSize("STANDARD_NC96ADS_A100_V4", 4, "NVIDIA A100"),
        VmSize("STANDARD_ND96ASR_V4", 8, "NVIDIA A100", infiniband=True),
        VmSize("STANDARD_NC40ADS_H100_V5", 1, "NVIDIA H100"),
        VmSize("STANDARD_NC80ADIS_H100_V5", 2, "NVIDIA H100"),
        VmSize("STANDARD_ND96ISR_H100_V5", 8, "NVIDIA H100", infiniband=True),
        VmSize("STANDARD_D2_V3", 0, "none"),
        VmSize("STANDARD_DS3_V2", 0, "none"),
        VmSize("STANDARD_NC6", 1, "NVIDIA K80", retired=_NC_RETIRED, replacement="STANDARD_NC4AS_T4_V3"),
        VmSize("STANDARD_NC12", 2, "NVIDIA K80", retired=_NC_RETIRED, replacement="STANDARD_NC48ADS_A100_V4"),
        VmSize("STANDARD_NC24", 4, "NVIDIA K80", retired=_NC_RETIRED, replacement="STANDARD_NC64AS_T4_V3"),
        VmSize("STANDARD_NC24R", 4, "NVIDIA K80", True, _NC_RETIRED, "STANDARD_ND96ASR_V4"),
        VmSize("STANDARD_NC6S_V2", 1, "NVIDIA P100", retired=_NC_RETIRED, replacement="STANDARD_NC4AS_T4_V3"),
        VmSize(
            "STANDARD_NC12S_V2", 2, "NVIDIA P100", retired=_NC_RETIRED, replacement="STANDARD_NC48ADS_A100_V4"
        ),
        VmSize(
            "STANDARD_NC24S_V2", 4, "NVIDIA P100", retired=_NC_RETIRED, replacement="STANDARD_NC96ADS_A100_V4"
        ),
        VmSize("STANDARD_NC24RS_V2", 4, "NVIDIA P100", True, _NC_RETIRED, "STANDARD_ND96ASR_V4"),
        VmSize("STANDARD_ND6S", 1, "NVIDIA P40", retired=_NC_RETIRED, replacement="STANDARD_NC24ADS_A100_V4"),
        VmSize(
            "STANDARD_ND12S", 2, "NVIDIA P40", retired=_NC_RETIRED, replacement="STANDARD_NC48ADS_A100_V4"
        ),
        VmSize(
            "STANDARD_ND24S", 4, "NVIDIA P40", retired=_NC_RETIRED, replacement="STANDARD_NC96ADS_A100_V4"
        ),
        VmSize("STANDARD_ND24RS", 4, "NVIDIA P40", True, _NC_RETIRED, "STANDARD_ND96ASR_V4"),
        VmSize("STANDARD_NV6", 1, "NVIDIA M60", retired=_NC_RETIRED, replacement="STANDARD_NC4AS_T4_V3"),
        VmSize(
            "STANDARD_NC6S_V3",
            1,
            "NVIDIA V100",
            retired=_NCV3_RETIRED,
            replacement="STANDARD_NC24ADS_A100_V4",
        ),
        VmSize(
            "STANDARD_NC12S_V3",
            2,
            "NVIDIA V100",
            retired=_NCV3_RETIRED,
            replacement="STANDARD_NC48ADS_A100_V4",
        ),
        VmSize(
            "STANDARD_NC24S_V3",
            4,
            "NVIDIA V100",
            retired=_NCV3_RETIRED,
            replacement="STANDARD_NC96ADS_A100_V4",
        ),
        VmSize("STANDARD_NC24RS_V3", 4, "NVIDIA V100", True, _NCV3_RETIRED, "STANDARD_ND96ASR_V4"),
    )
}

#: the size the Batch AI recipes created their clusters with (``az batchai cluster create -s Standard_NC6``)
RECIPE_VM_SIZE = "STANDARD_NC6"


def vm_size(name: str) -> VmSize | None:
    """Facts about a VM size (case-insensitive), or None when azbai does not know it."""
    return VM_SIZES.get(name.upper())


@dataclass(frozen=True)
class ImageReplacement:
    """A retired framework image and what to run instead."""

    pattern: str
    pip_packages: tuple[str, ...]
    why: str


#: a current GPU base image Azure ML maintains (Ubuntu 22.04, CUDA 11.8, Open MPI 4.1)
CURRENT_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04:latest"

IMAGE_REPLACEMENTS: tuple[ImageReplacement, ...] = (
    ImageReplacement(
        r"^(microsoft/cntk|batchaitraining/cntk)",
        ("torch",),
        "CNTK was discontinued in 2019 and has no build for any current Python; port the scripts to PyTorch "
        "(recipes/cntk-mnist shows ConvNet_MNIST.py ported)",
    ),
    ImageReplacement(
        r"^tensorflow/tensorflow:1\.",
        ("tensorflow",),
        "TensorFlow 1.x images need CUDA 8/9 drivers Azure ML no longer provides; scripts need the tf.compat.v1 API",
    ),
    ImageReplacement(
        r"^(pytorch/pytorch:0\.|batchaitraining/pytorch:0\.)",
        ("torch",),
        "PyTorch 0.4 images need CUDA 9; current torch runs the same scripts with minor changes",
    ),
    ImageReplacement(r"^caffe2ai/caffe2", ("torch",), "Caffe2 was merged into PyTorch in 2018"),
    ImageReplacement(
        r"^batchaitraining/chainermn",
        ("chainer",),
        "Chainer is in maintenance mode since 2019; consider PyTorch",
    ),
)


def replacement_for(image: str) -> ImageReplacement | None:
    """The replacement of a retired framework image, or None when the image is not known to be retired."""
    for candidate in IMAGE_REPLACEMENTS:
        if re.search(candidate.pattern, image):
            return candidate
    return None
