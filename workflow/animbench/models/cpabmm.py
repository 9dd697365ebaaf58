"""CPAB Motion Model (Wang et al., AAAI 2024): TPSMM with CPAB transformations.

TPSMM (models/tpsmm.py) with its K = 10 thin-plate splines replaced by K local CPAB
transformations (4×4 tessellation, each fitted to one group of 5 driving → source keypoint
pairs) plus one global CPAB transformation (6×6, fitted to all 50 pairs): the dense motion
network combines [background affine, 10 local, 1 global] = 12 transforms, its hourglass input
has 51 heatmap + 36 warped-source = 87 channels. Keypoint detector, background predictor,
inpainting network, AVD network and the checkpoint keys are TPSMM's.

Transformation inference (paper Sec. "Keypoint-Based Transformation Inference", the authors'
`CPABTransformation`): in every forward pass, training and evaluation alike, θ starts at
libcpab's identity (every entry 1e-6) and Adam (lr 1e-2) runs `max_iter` steps on one
Frobenius norm ‖T_θ(kp_d) − kp_s‖ over the whole batch (the paper writes an L1 mean, the code
the norm; the code is followed). max_iter is 100 (vox, ted, mgif) or 200 (taichi); the global
transform runs int(1.5 · max_iter). Keypoints are detached: the keypoint detector learns from
the heatmaps and the equivariance loss, never through the warps. The fitted θ is a constant for
the model, so the grids are sampled without autograd (the authors' grids carry a gradient only
towards θ, a leaf no optimiser holds: the same updates).

The CPAB transformation itself is animbench.models.cpab (pure PyTorch, exact integration;
the authors use libcpab's compiled ops, see that module for the differences).

Ablation switches (paper Table 2): `use_global_cpab` (the 11th transform), the tessellation
sizes, `max_iter`, `global_iter_factor`, the fit's learning rate and start.
"""

from __future__ import annotations

import torch

from animbench.models.cpab import CPAB
from animbench.models.tpsmm import POINTS_PER_TPS, TPSMM, DenseMotionNetwork


class CPABDenseMotionNetwork(DenseMotionNetwork):
    """TPSMM's dense motion network over [bg affine, K local CPAB, (1 global CPAB)].

    37,957,759 parameters at the paper configuration (notes §5: 37.96M; TPSMM's 37,941,397
    plus 3 input channels, whose hourglass output also feeds the maps, the top occlusion conv
    and the up blocks, and 1 contribution map). The CPAB bases are non-persistent buffers, so
    the state_dict keys are TPSMM's (the authors' libcpab objects hold no tensors either).
    """

    def __init__(
        self,
        block_expansion: int = 64,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_cpab: int = 10,
        num_channels: int = 3,
        scale_factor: float = 0.25,
        bg: bool = False,
        multi_mask: bool = True,
        kp_variance: float = 0.01,
        max_iter: int = 100,
        global_iter_factor: float = 1.5,
        use_global_cpab: bool = True,
        local_tessellation: int = 4,
        global_tessellation: int = 6,
        fit_lr: float = 1e-2,
        fit_epsilon: float = 1e-6,
    ):
        super().__init__(
            block_expansion,
            num_blocks,
            max_features,
            num_tps=num_cpab,
            num_channels=num_channels,
            scale_factor=scale_factor,
            bg=bg,
            multi_mask=multi_mask,
            kp_variance=kp_variance,
            num_transforms=num_cpab + int(use_global_cpab),
            num_kp=num_cpab * POINTS_PER_TPS,
        )
        self.num_cpab = num_cpab
        self.max_iter = int(max_iter)
        self.global_max_iter = int(global_iter_factor * max_iter)  # the reference's int(1.5·n)
        self.fit_lr, self.fit_epsilon = fit_lr, fit_epsilon
        self.local_cpab = CPAB(local_tessellation)
        self.global_cpab = CPAB(global_tessellation) if use_global_cpab else None

    def fit_thetas(
        self, kp_driving: dict, kp_source: dict
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """θ of the local transforms [B, K, d_local] and of the global one [B, d_global] (None
        without it), each with T_θ(kp_d) ≈ kp_s; no gradient reaches the keypoints."""
        kp_d, kp_s = kp_driving["fg_kp"].detach(), kp_source["fg_kp"].detach()
        b = kp_d.shape[0]

        def groups(kp: torch.Tensor) -> torch.Tensor:
            return kp.reshape(b * self.num_cpab, POINTS_PER_TPS, 2)

        fit = {"lr": self.fit_lr, "epsilon": self.fit_epsilon}
        local = self.local_cpab.fit_theta(groups(kp_d), groups(kp_s), self.max_iter, **fit)
        global_theta = None
        if self.global_cpab is not None:
            global_theta = self.global_cpab.fit_theta(kp_d, kp_s, self.global_max_iter, **fit)
        return local.view(b, self.num_cpab, -1), global_theta

    def foreground_transformations(self, size, kp_driving: dict, kp_source: dict) -> torch.Tensor:
        """[B, K (+1), H, W, 2]: the K local CPAB grids, then the global one."""
        h, w = size
        local, global_theta = self.fit_thetas(kp_driving, kp_source)
        b = local.shape[0]
        with torch.no_grad():
            grids = [self.local_cpab.warp_grid(local.flatten(0, 1), h, w).view(b, -1, h, w, 2)]
            if global_theta is not None:
                grids.append(self.global_cpab.warp_grid(global_theta, h, w).unsqueeze(1))
        return torch.cat(grids, dim=1)


class CPABMM(TPSMM):
    """The animator: TPSMM's networks (same keys as the authors' logger) with the CPAB dense
    motion network. `common_params` take the authors' `num_cpab` (TPSMM's `num_tps`);
    `dense_motion_params` take CPABDenseMotionNetwork's switches (max_iter, use_global_cpab,
    tessellations, ...)."""

    method = "cpabmm"

    def __init__(self, common_params: dict, *args, **kwargs):
        common = dict(common_params)
        if "num_cpab" in common:
            if "num_tps" in common:
                raise ValueError("give num_cpab or num_tps, not both")
            common["num_tps"] = common.pop("num_cpab")
        super().__init__(common, *args, **kwargs)

    def build_dense_motion_network(self, **params) -> DenseMotionNetwork:
        params["num_cpab"] = params.pop("num_tps")
        return CPABDenseMotionNetwork(**params)
