"""Anchors for ATSS: one square anchor per feature-map location, with explicit strides."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class AnchorGenerator:
    """One square anchor of side ``octave_base_scale * stride`` per location and level.

    Strides are given, not inferred. torchvision's ``AnchorGenerator`` infers each level's
    stride as ``image_size // grid_size``, which is wrong for P6/P7 whenever the input is not a
    multiple of 128 (e.g. 100 px input: P6 is 2 px wide, inferred stride 50 instead of 64).

    Anchor centres sit at ``(i + center_offset) * stride``. The default offset 0 matches mmdet 2.x
    (and so OTX 1.x) and torchvision.

    Args:
        strides: stride of each level, finest first (P3..P7).
        octave_base_scale: anchor side in units of the level's stride.
        center_offset: centre offset in units of the stride (0 or 0.5).
    """

    def __init__(
        self,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        octave_base_scale: float = 8.0,
        center_offset: float = 0.0,
    ) -> None:
        self.strides = tuple(int(s) for s in strides)
        self.octave_base_scale = float(octave_base_scale)
        self.center_offset = float(center_offset)

    def __call__(
        self,
        grid_sizes: Sequence[tuple[int, int]],
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        """Anchors per level for feature maps of the given ``(height, width)`` sizes.

        Returns:
            one ``[H_l * W_l, 4]`` xyxy tensor per level, row-major (y, then x), which is the
            order of a ``[N, C, H, W]`` map flattened as ``permute(0, 2, 3, 1).reshape(N, -1, C)``.
        """
        if len(grid_sizes) != len(self.strides):
            raise ValueError(f"got {len(grid_sizes)} feature maps for {len(self.strides)} strides")
        anchors = []
        for (height, width), stride in zip(grid_sizes, self.strides):
            half = self.octave_base_scale * stride / 2.0
            xs = (torch.arange(width, device=device, dtype=dtype) + self.center_offset) * stride
            ys = (torch.arange(height, device=device, dtype=dtype) + self.center_offset) * stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            cx, cy = cx.reshape(-1), cy.reshape(-1)  # [HW]
            anchors.append(torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1))  # [HW, 4]
        return anchors
