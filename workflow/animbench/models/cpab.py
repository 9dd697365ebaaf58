"""CPAB transformations (continuous piecewise-affine based diffeomorphisms) in pure PyTorch.

CPABMM (AAAI'24) replaces TPSMM's thin-plate splines by CPAB transformations fitted to
keypoints; it uses libcpab (SkafteNicki/libcpab, pytorch backend, compiled C++/CUDA ops). This
module is an independent implementation of the same transformation family, vectorised,
differentiable and device-agnostic, with no compiled extension.

What CPAB is. A velocity field v_θ on the plane is piecewise affine on a triangulation and
continuous; T_θ(x) is the solution at t = 1 of dx/dt = v_θ(x), x(0) = x. Integrating a
continuous, piecewise-affine field gives a diffeomorphism; θ = 0 gives the identity and
T_{-θ} = T_θ^{-1} (the field is stationary).

Tessellation (libcpab's 2-D "type II"). The domain is [0, 1]² (x first, y downwards). It is
split into nc × nc square cells, each into 4 triangles around the cell centre, in this order:
(centre, ul, ur) top, (centre, ur, lr) right, (centre, lr, ll) bottom, (centre, ll, ul) left.
Cells are numbered row-major (x fastest), triangle index = 4 · (col + row · nc) + k. Triangle
k has an affine map A_k = [[a, b, c], [d, e, f]] (6 numbers, row-major), v(x) = A_k [x; 1].

Constraints. The 6 · 4nc² numbers must satisfy L · vec(A) = 0, where L holds (a) continuity:
for each pair of triangles sharing an edge, A_i v = A_j v at both edge vertices (2 vertices × 2
dims = 4 rows); (b) "valid outside the domain" (libcpab zero_boundary=False, as CPABMM uses):
for each pair of boundary triangles of adjacent cells along a domain side (they share one
vertex p on the side), A_i and A_j also agree at an auxiliary vertex p − 10 e_x (left/right
sides) or p − 10 e_y (top/bottom sides), i.e. on the whole line through p perpendicular to the
side. The field is A = B θ with B an orthonormal basis of null(L): theta_dim 58 (4×4), 130
(6×6). B is built like libcpab's: L's rows in libcpab's order, then the right singular vectors of
a full float64 SVD whose singular values are ≤ 1e-6 (the null space basis is not unique; this
reproduces the procedure, not a verified bit-identical copy of libcpab's cached basis files).

Outside the domain. Points outside [0, 1]² use the field of a boundary triangle, chosen by
libcpab's rule (findcellidx): a point beyond one side is pushed onto that side; in a corner
quadrant, the diagonal through the corner splits it between the two sides. The outside
constraints make the field continuous across these outside regions too (the strips are
separated by the lines continued from the cell sides, the corner quadrants by the cell
diagonal), so the flow is defined and continuous on the whole plane. Each triangle's region is
therefore a convex polygon (unbounded for boundary triangles): the triangle's edges, without the
edge on the domain side, plus the two strip lines.

Why closed form. Inside one region the ODE is linear: x(t) = expm(t Ã) [x0; 1] with Ã the 3×3
augmented matrix. ``transform`` integrates exactly: find the time at which the trajectory leaves
its region (under no_grad: a coarse scan and a short binary search on the exact flow bracket
it, then regula falsi and Newton steps on the crossed face's line solve it to rounding), jump
to the neighbouring region, repeat (at most ``max_crossings`` times, vectorised over all
points; points that finish leave the working set). The exit time is refined by one Newton step on the exit face's line inside autograd,
which gives the exact first-order dependence of the hitting time on θ and x (implicit function
theorem), so autograd through torch.matrix_exp yields the true gradient of the exact flow
(gradcheck passes in float64).

Differences from libcpab (documented on purpose):
- libcpab's integrator takes nstepsolver = 50 steps x ← expm(Ã_c / 50) x with c the cell at the
  start of each step, so a step that crosses a border uses the wrong field for part of it (an
  O(1/50²) error per crossing); its gradient integrates the sensitivity ODE with a midpoint rule
  on the same steps. Here the flow is exact up to floating point and the gradient is exact.
- libcpab's findcellidx clamps to 1 − 1e-8, which is 1.0 in float32, so points with x = 1 or
  y = 1 (the last row/column of a [0, 1] grid) index one cell too far. Here the column and row
  indices are clamped to nc − 1.
- Only square nc × nc tessellations with zero_boundary=False (what CPABMM uses); the libcpab
  corner rule is only continuous for square cells.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.linalg
import torch
from torch import nn

from animbench.models.blocks import make_coordinate_grid

# ---------------------------------------------------------------------------------------------
# Tessellation and basis (numpy, float64, built once per configuration)


def _triangle_vertices(nc: int) -> tuple[list[tuple], list[tuple[int, int, int]]]:
    """libcpab's vertex list (homogeneous (x, y, 1) tuples) and (col, row, k) per triangle."""
    vx = np.linspace(0.0, 1.0, nc + 1)
    vy = np.linspace(0.0, 1.0, nc + 1)
    verts, cells = [], []
    for i in range(nc):  # rows
        for j in range(nc):  # columns
            ul = (vx[j], vy[i], 1.0)
            ur = (vx[j + 1], vy[i], 1.0)
            ll = (vx[j], vy[i + 1], 1.0)
            lr = (vx[j + 1], vy[i + 1], 1.0)
            centre = ((vx[j] + vx[j + 1]) / 2, (vy[i] + vy[i + 1]) / 2, 1.0)
            for k, tri in enumerate(
                ((centre, ul, ur), (centre, ur, lr), (centre, lr, ll), (centre, ll, ul))
            ):
                # Python floats, as libcpab's make_hashable produces, so that set order matches
                verts.append(tuple(tuple(float(c) for c in v) for v in tri))
                cells.append((j, i, k))
    return verts, cells


def constraint_matrix(nc: int, volume_preservation: bool = False) -> np.ndarray:
    """libcpab's constraint matrix L [rows, 6 · 4nc²] for zero_boundary=False, row order kept."""
    verts, cells = _triangle_vertices(nc)
    n_tri = len(verts)
    pairs, shared = [], []
    seen = set()
    # continuity: triangle pairs that share an edge (2 vertices)
    for i in range(n_tri):
        for j in range(n_tri):
            if i == j:
                continue
            common = set(verts[i]).intersection(verts[j])
            if len(common) >= 2 and (j, i) not in seen:
                shared.append(list(common)[:2])
                pairs.append((i, j))
                seen.add((i, j))
    # valid outside: boundary triangles of adjacent cells along each side share one vertex; an
    # auxiliary vertex 10 units away makes them agree on the line continuing the cell side
    seen_out = set()
    for i in range(n_tri):
        for j in range(n_tri):
            (ci, ri, ki), (cj, rj, kj) = cells[i], cells[j]
            left = ci == cj == 0 and ki == kj == 3 and abs(ri - rj) == 1
            right = ci == cj == nc - 1 and ki == kj == 1 and abs(ri - rj) == 1
            top = ri == rj == 0 and ki == kj == 0 and abs(ci - cj) == 1
            bottom = ri == rj == nc - 1 and ki == kj == 2 and abs(ci - cj) == 1
            common = set(verts[i]).intersection(verts[j])
            if len(common) == 1 and (left or right or top or bottom) and (j, i) not in seen_out:
                vertex = tuple(common)[0]
                aux = list(vertex)
                aux[0 if (left or right) else 1] -= 10  # libcpab subtracts 10 on every side
                shared.append([vertex, tuple(aux)])
                pairs.append((i, j))
                seen_out.add((i, j))
    rows = []
    for (i, j), vs in zip(pairs, shared):
        for vertex in vs:
            for k in range(2):
                row = np.zeros(6 * n_tri)
                row[6 * i + 3 * k : 6 * i + 3 * k + 3] = vertex
                row[6 * j + 3 * k : 6 * j + 3 * k + 3] = -np.asarray(vertex)
                rows.append(row)
    L = np.stack(rows)
    if volume_preservation:  # zero trace per triangle (libcpab's create_zero_trace_constrains)
        trace = np.zeros((n_tri, 6 * n_tri))
        for c in range(n_tri):
            trace[c, 6 * c] = trace[c, 6 * c + 4] = 1.0
        L = np.concatenate([L, trace])
    return L


def null_space(L: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Orthonormal null-space basis [D, d] as libcpab's `null`: full SVD, rows of Vh with s ≤ eps."""
    _, s, vh = scipy.linalg.svd(L, full_matrices=True)  # gesdd, as libcpab
    padding = max(0, L.shape[1] - s.shape[0])
    mask = np.concatenate([s <= eps, np.ones(padding, dtype=bool)])
    return vh[mask].T.copy()


def _region_faces(nc: int) -> np.ndarray:
    """Half-planes g(x) = a·x + c ≤ 0 bounding each triangle's region, [4nc², 4, 3] (a_x, a_y, c).

    Faces are written in the cell's local coordinates (u, v) = (x·nc − col, y·nc − row), where
    they have unit-size coefficients, then mapped to global coordinates. A face lying on the
    domain side is dropped (the region extends outside) and replaced by the two strip lines
    (cell sides continued outwards), of which a strip line on a domain side is dropped again
    (corner cells). Unused slots are (0, 0, −1), never violated.
    """
    faces = np.zeros((4 * nc * nc, 4, 3))
    faces[..., 2] = -1.0
    for row in range(nc):
        for col in range(nc):
            on_side = {"u0": col == 0, "u1": col == nc - 1, "v0": row == 0, "v1": row == nc - 1}
            side = {"u0": (-1, 0, 0), "u1": (1, 0, -1), "v0": (0, -1, 0), "v1": (0, 1, -1)}
            # (diagonal faces, outer side, strip sides) per triangle, in local (a_u, a_v, c)
            spec = [
                ([(-1, 1, 0), (1, 1, -1)], "v0", ("u0", "u1")),  # top: v ≤ u, u + v ≤ 1
                ([(-1, 1, 0), (-1, -1, 1)], "u1", ("v0", "v1")),  # right: v ≤ u, u + v ≥ 1
                ([(1, -1, 0), (-1, -1, 1)], "v1", ("u0", "u1")),  # bottom: v ≥ u, u + v ≥ 1
                ([(1, -1, 0), (1, 1, -1)], "u0", ("v0", "v1")),  # left: v ≥ u, u + v ≤ 1
            ]
            for k, (diagonals, outer, strips) in enumerate(spec):
                local = list(diagonals)
                if not on_side[outer]:
                    local.append(side[outer])
                else:
                    local += [side[s] for s in strips if not on_side[s]]
                tri = 4 * (col + row * nc) + k
                for f, (au, av, c) in enumerate(local):
                    # au (x nc − col) + av (y nc − row) + c
                    faces[tri, f] = (au * nc, av * nc, c - au * col - av * row)
    return faces


@functools.cache
def _tessellation_arrays(nc: int, volume_preservation: bool) -> tuple[np.ndarray, ...]:
    L = constraint_matrix(nc, volume_preservation)
    return L, null_space(L), _region_faces(nc)


class Tessellation:
    """nc × nc type-II triangulation of [0, 1]²: constraint matrix L, basis B [D, d], regions."""

    def __init__(self, nc: int, zero_boundary: bool = False, volume_preservation: bool = False):
        if zero_boundary:
            raise ValueError(
                "zero_boundary=True is not supported: only the field valid outside the domain, as CPABMM uses"
            )
        self.nc = int(nc)
        self.num_triangles = 4 * self.nc * self.nc
        self.volume_preservation = volume_preservation
        L, B, faces = _tessellation_arrays(self.nc, volume_preservation)
        self.constraint_matrix = L
        self.basis = torch.from_numpy(B)  # float64 [6 · num_triangles, theta_dim]
        self.faces = torch.from_numpy(faces)  # float64 [num_triangles, 4, 3]
        self.theta_dim = B.shape[1]


# ---------------------------------------------------------------------------------------------
# The transformation


def _apply(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Affine maps [..., 6] (a, b, c, d, e, f) applied to points [..., 2] → [..., 2]."""
    a, b, c, d, e, f = m.unbind(-1)
    px, py = x.unbind(-1)
    return torch.stack([a * px + b * py + c, d * px + e * py + f], dim=-1)


def affine_expm(m: torch.Tensor) -> torch.Tensor:
    """expm of the augmented matrices [[a, b, c], [d, e, f], [0, 0, 0]] given as m [..., 6].

    Returns the top two rows [..., 6] (the last row stays [0, 0, 1]). Scaling and squaring with
    a Taylor polynomial in Horner form, one scaling for the whole batch (no masks). Batched
    torch.linalg.matrix_exp is about 10× slower on CPU for the 10⁵–10⁶ small matrices of a
    warped grid. Differentiable by autograd.
    """
    if m.numel() == 0:
        return m
    with torch.no_grad():
        a = m.detach().unflatten(-1, (2, 3))[..., :2]
        norm = a.abs().sum(-1).amax().item()  # ∞-norm of the linear part bounds the series
    squarings = max(0, math.ceil(math.log2(norm / 0.25))) if norm > 0 else 0
    degree = 10 if m.dtype == torch.float64 else 6  # tail ≤ 0.25^(q+1)/(q+1)!, relative
    m = m * 2.0**-squarings
    if m.numel() > 6 * 4096:  # many matrices: elementwise on the six entries is ~5× faster
        return _affine_expm_entries(m, degree, squarings)
    x = torch.cat([m.unflatten(-1, (2, 3)), torch.zeros_like(m[..., :3]).unsqueeze(-2)], -2)
    eye = torch.eye(3, dtype=m.dtype, device=m.device)
    p = eye + x / degree
    for k in range(degree - 1, 0, -1):
        p = eye + (x @ p) / k
    for _ in range(squarings):
        p = p @ p
    return p[..., :2, :].flatten(-2)


def _affine_expm_entries(m: torch.Tensor, degree: int, squarings: int) -> torch.Tensor:
    """affine_expm's Horner and squaring loops written on the six entries (few, large ops)."""
    a, b, c, d, e, f = m.unbind(-1)
    pa, pb, pc = 1 + a / degree, b / degree, c / degree
    pd, pe, pf = d / degree, 1 + e / degree, f / degree
    for k in range(degree - 1, 0, -1):  # P ← I + X P / k
        pa, pb, pc, pd, pe, pf = (
            1 + (a * pa + b * pd) / k,
            (a * pb + b * pe) / k,
            (a * pc + b * pf + c) / k,
            (d * pa + e * pd) / k,
            1 + (d * pb + e * pe) / k,
            (d * pc + e * pf + f) / k,
        )
    for _ in range(squarings):  # P ← P P
        pa, pb, pc, pd, pe, pf = (
            pa * pa + pb * pd,
            pa * pb + pb * pe,
            pa * pc + pb * pf + pc,
            pd * pa + pe * pd,
            pd * pb + pe * pe,
            pd * pc + pe * pf + pf,
        )
    return torch.stack([pa, pb, pc, pd, pe, pf], dim=-1)


def _face_values(faces: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """g = a·x + c for faces [..., F, 3] and points [..., 2] → [..., F]."""
    return faces[..., 0] * x[..., :1] + faces[..., 1] * x[..., 1:] + faces[..., 2]


def _face_value(face: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """g = a·x + c for one face per point, face [..., 3] and points [..., 2] → [...]."""
    return face[..., 0] * x[..., 0] + face[..., 1] * x[..., 1] + face[..., 2]


class CPAB(nn.Module):
    """CPAB transformations on an nc × nc tessellation of [0, 1]² (libcpab's 2-D setting).

    θ is [B, theta_dim]; points are [B, N, 2] or shared [N, 2], x first, in the [0, 1] domain
    (``fit_theta`` and ``warp_grid`` take and return the models' [-1, 1] coordinates). The
    basis is a non-persistent buffer: it moves with .to(device) and stays out of state_dict,
    like CPABMM whose checkpoints hold no CPAB tensors.
    """

    def __init__(
        self,
        nc: int,
        volume_preservation: bool = False,
        coarse_steps: int = 8,
        max_crossings: int = 64,
    ):
        super().__init__()
        self.tessellation = Tessellation(nc, volume_preservation=volume_preservation)
        self.nc = self.tessellation.nc
        self.theta_dim = self.tessellation.theta_dim
        self.num_triangles = self.tessellation.num_triangles
        self.coarse_steps = coarse_steps
        self.max_crossings = max_crossings
        self.register_buffer("basis", self.tessellation.basis.clone(), persistent=False)
        self.register_buffer("faces", self.tessellation.faces.clone(), persistent=False)

    # -- parameters -------------------------------------------------------------------------

    def identity(
        self, n: int, epsilon: float = 0.0, device=None, dtype=torch.float32
    ) -> torch.Tensor:
        """libcpab's identity: θ = 0 + epsilon in every entry ([n, theta_dim])."""
        return torch.full((n, self.theta_dim), float(epsilon), device=device, dtype=dtype)

    def sample_transformation(
        self, n: int, scale: float = 1.0, generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """θ ~ N(0, scale² I), libcpab's default prior (scale 1)."""
        theta = torch.randn(n, self.theta_dim, generator=generator, dtype=torch.float64)
        return (scale * theta).to(device=device, dtype=torch.float32)

    def affine_matrices(self, theta: torch.Tensor) -> torch.Tensor:
        """Per-triangle affine maps A = B θ, [B, num_triangles, 2, 3]."""
        basis = self.basis.to(theta.dtype)
        return (theta @ basis.T).view(theta.shape[0], self.num_triangles, 2, 3)

    # -- geometry ---------------------------------------------------------------------------

    def cell_index(self, points: torch.Tensor) -> torch.Tensor:
        """Triangle index of points [..., 2] (libcpab's findcellidx, with the outside rule)."""
        nc = self.nc
        x, y = points[..., 0], points[..., 1]
        outside = (x < 0) | (x > 1) | (y < 0) | (y > 1)
        xs, ys = x - 0.5, y - 0.5
        ax, ay = xs.abs(), ys.abs()
        # push outside points onto the nearest side; in corner quadrants the diagonal decides
        push_x = torch.where(ax < ay, 0.5 / nc, 0.0)
        push_y = torch.where(ay < ax, 0.5 / nc, 0.0)
        xs = torch.where(ax > 0.5, torch.copysign(0.5 - push_x, xs), xs)
        ys = torch.where(ay > 0.5, torch.copysign(0.5 - push_y, ys), ys)
        x = torch.where(outside, xs + 0.5, x)
        y = torch.where(outside, ys + 0.5, y)
        px, py = x * nc, y * nc
        col = px.floor().clamp(0, nc - 1)
        row = py.floor().clamp(0, nc - 1)
        u, v = px - col, py - row
        tri = torch.where(u < v, torch.where(1 - u < v, 2, 3), torch.where(1 - u < v, 1, 0))
        return (4 * (col + row * nc)).long() + tri

    def _flatten(self, points: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, int]:
        if theta.dim() != 2 or theta.shape[1] != self.theta_dim:
            raise ValueError(f"theta must be [B, {self.theta_dim}], got {tuple(theta.shape)}")
        points = points.to(theta.dtype)
        if points.dim() == 2:
            points = points.unsqueeze(0).expand(theta.shape[0], -1, -1)
        if points.shape[0] != theta.shape[0] or points.shape[-1] != 2:
            raise ValueError(f"points must be [N, 2] or [{theta.shape[0]}, N, 2]")
        return points.reshape(-1, 2), points.shape[1]

    def velocity(self, points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """v_θ(points), same shape as the (batched) points [B, N, 2]."""
        flat, n = self._flatten(points, theta)
        a = self.affine_matrices(theta).reshape(-1, 6)
        return self._velocity(flat, a, self._batch_offset(theta.shape[0], n, flat.device))

    def _batch_offset(self, bsz: int, n: int, device) -> torch.Tensor:
        return torch.arange(bsz, device=device).repeat_interleave(n) * self.num_triangles

    def _velocity(self, flat: torch.Tensor, a: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return _apply(a[offset + self.cell_index(flat)], flat)

    # -- integration ------------------------------------------------------------------------

    def transform_numeric(
        self, points: torch.Tensor, theta: torch.Tensor, steps: int = 1000
    ) -> torch.Tensor:
        """Reference integration with `steps` classical RK4 steps (tests only)."""
        x, n = self._flatten(points, theta)
        a = self.affine_matrices(theta).reshape(-1, 6)
        offset = self._batch_offset(theta.shape[0], n, x.device)
        h = 1.0 / steps
        for _ in range(steps):
            k1 = self._velocity(x, a, offset)
            k2 = self._velocity(x + 0.5 * h * k1, a, offset)
            k3 = self._velocity(x + 0.5 * h * k2, a, offset)
            k4 = self._velocity(x + h * k3, a, offset)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x.view(theta.shape[0], n, 2)

    def transform(self, points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """T_θ(points) by exact piecewise integration; [B, N, 2] (points [N, 2] are shared)."""
        flat, n = self._flatten(points, theta)
        bsz, dtype, device = theta.shape[0], theta.dtype, theta.device
        double = dtype == torch.float64
        eps = torch.finfo(dtype).eps
        h = 1.0 / self.coarse_steps
        levels = 6  # binary-search depth: brackets the hitting time to h / 64
        newton = 2 if double else 1  # no-grad Newton steps from the regula-falsi guess
        sizes = h * 2.0 ** -torch.arange(levels + 1, device=device, dtype=dtype)
        finest = sizes[-1].item()
        tol = 64 * eps  # slack of the inside test, in cell units
        nudge = 256 * eps  # step across a border to look up the next region

        a = self.affine_matrices(theta).reshape(-1, 6)  # [B · T, 6], differentiable
        faces = self.faces.to(dtype).repeat(bsz, 1, 1)  # [B · T, 4, 3]
        with torch.no_grad():  # exact flows over the search step sizes, every triangle
            steps = affine_expm(sizes.view(-1, 1, 1) * a.detach())  # [levels + 1, B · T, 6]

        index = torch.arange(flat.shape[0], device=device)
        cell = self._batch_offset(bsz, n, device) + self.cell_index(flat.detach())
        x, tau = flat, torch.ones(flat.shape[0], dtype=dtype, device=device)
        done_index, done_value = [], []
        for crossing in range(self.max_crossings):
            m = a[cell]
            with torch.no_grad():
                t_lo, y_lo = self._bracket(x.detach(), cell, tau, steps, faces, sizes, tol)
                near_end = tau - t_lo <= finest * (1 + 1e-6)
                if crossing == self.max_crossings - 1:  # budget spent: finish where they are
                    near_end = torch.ones_like(near_end)
            # points that may reach t = tau in this region: integrate the remaining time
            end = affine_expm(tau[near_end, None] * m[near_end])
            end = _apply(end, x[near_end])
            with torch.no_grad():
                exited = ~near_end
                stays = _face_values(faces[cell[near_end]], end.detach()).amax(-1) <= tol
                if crossing == self.max_crossings - 1:
                    stays = torch.ones_like(stays)
                exited[near_end] = ~stays
            done_index.append(index[near_end][stays])
            done_value.append(end[stays])
            if not exited.any():
                break
            index, cell, m, x, tau, t_lo, y_lo = (
                z[exited] for z in (index, cell, m, x, tau, t_lo, y_lo)
            )
            with torch.no_grad():
                t0, face = self._hitting_time(
                    x.detach(), m.detach(), cell, tau, t_lo, y_lo, steps[-1], faces, finest, newton
                )
            # one Newton step inside autograd: the value is unchanged to rounding, and its
            # derivative is the hitting time's exact dependence on θ and x (implicit function)
            x1 = _apply(affine_expm(t0.unsqueeze(-1) * m), x)
            v = _apply(m, x1)
            g = _face_value(face, x1)
            g_dot = (face[:, :2] * v).sum(-1)
            moving_out = g_dot > eps
            dt = -g / torch.where(moving_out, g_dot, torch.ones_like(g_dot))
            dt = torch.where(moving_out, dt, torch.zeros_like(dt))
            dt = torch.minimum(torch.maximum(dt, -t0), tau - t0)
            x = x1 + dt.unsqueeze(-1) * v
            tau = tau - t0 - dt
            with torch.no_grad():
                direction = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
                local = self.cell_index(x + nudge * direction)
                cell = (cell // self.num_triangles) * self.num_triangles + local
        order = torch.argsort(torch.cat(done_index))
        return torch.cat(done_value)[order].view(bsz, n, 2)

    def _bracket(
        self,
        x: torch.Tensor,
        cell: torch.Tensor,
        tau: torch.Tensor,
        steps: torch.Tensor,
        faces: torch.Tensor,
        sizes: torch.Tensor,
        tol: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last time t_lo ≤ tau known inside the region, and the point there.

        A coarse scan with step h, then a binary search (accept a half-sized step while its
        end point is still inside): the exit time, if before tau, lies in (t_lo, t_lo + h/2^6].
        Only end points are tested, so an excursion shorter than h out of a region and back
        is not seen; the field is continuous, so the error left is of second order in it.
        """
        y, t = x, torch.zeros_like(tau)
        stopped = torch.zeros_like(tau, dtype=torch.bool)
        region = faces[cell]  # [m, 4, 3]

        def advance(level: int, allowed: torch.Tensor) -> torch.Tensor:
            nonlocal y, t
            y_next = _apply(steps[level][cell], y)
            inside = _face_values(region, y_next).amax(-1) <= tol
            ok = allowed & inside & (t + sizes[level] <= tau)
            y = torch.where(ok.unsqueeze(-1), y_next, y)
            t = t + ok * sizes[level]
            return ok

        for _ in range(self.coarse_steps):
            stopped |= ~advance(0, ~stopped)
            if bool(stopped.all()):
                break
        for level in range(1, sizes.shape[0]):
            advance(level, torch.ones_like(stopped))
        return t, y

    @staticmethod
    def _hitting_time(
        x: torch.Tensor,
        m: torch.Tensor,
        cell: torch.Tensor,
        tau: torch.Tensor,
        t_lo: torch.Tensor,
        y_lo: torch.Tensor,
        finest: torch.Tensor,
        faces: torch.Tensor,
        width: float,
        newton: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hitting time in the bracket (t_lo, t_lo + width] and the face crossed there."""
        t_hi = torch.minimum(t_lo + width, tau)
        y_hi = _apply(finest[cell], y_lo)  # the point one finest step on: outside
        region = faces[cell]
        g_hi = _face_values(region, y_hi)
        k = g_hi.argmax(-1)
        face = region[torch.arange(k.shape[0], device=k.device), k]  # [m, 3]
        g_hi = g_hi.gather(-1, k.unsqueeze(-1)).squeeze(-1)
        g_lo = _face_value(face, y_lo)
        # regula falsi on the face's line, then Newton steps on the exact flow
        frac = (-g_lo / (g_hi - g_lo).clamp_min(1e-30)).clamp(0, 1)
        t = t_lo + frac * width
        for _ in range(newton):
            y = _apply(affine_expm(t.unsqueeze(-1) * m), x)
            g = _face_value(face, y)
            g_dot = (face[:, :2] * _apply(m, y)).sum(-1)
            step = torch.where(g_dot > 0, -g / g_dot.clamp_min(1e-30), torch.zeros_like(g))
            t = torch.minimum(torch.maximum(t + step, t_lo), t_lo + width)
        return torch.minimum(t, t_hi), face

    # -- CPABMM usage ------------------------------------------------------------------------

    def fit_theta(
        self,
        source_points: torch.Tensor,
        target_points: torch.Tensor,
        iterations: int,
        lr: float = 1e-2,
        epsilon: float = 1e-6,
    ) -> torch.Tensor:
        """θ [B, d] with T_θ(source_points) ≈ target_points; points [B, N, 2] in [-1, 1].

        CPABMM's CPABTransformation: points detached and mapped to [0, 1], θ from
        identity(epsilon=1e-6), Adam(lr) for `iterations` steps on one Frobenius norm over the
        whole batch of ‖2 T_θ(x) − 1 − target‖. CPABMM calls it with source_points = driving
        keypoints and target_points = source keypoints (a backward, driving → source warp).
        """
        src = (source_points.detach() + 1) / 2
        tgt = target_points.detach()
        theta = self.identity(src.shape[0], epsilon, device=src.device, dtype=src.dtype)
        theta.requires_grad_(True)
        optimizer = torch.optim.Adam([theta], lr=lr)
        with torch.enable_grad():
            for _ in range(int(iterations)):
                optimizer.zero_grad()
                moved = 2 * self.transform(src, theta) - 1
                loss = torch.linalg.vector_norm(moved - tgt)
                loss.backward()
                optimizer.step()
        return theta.detach()

    def warp_grid(self, theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """[B, H, W, 2] sampling grid T_θ(grid) in [-1, 1] (make_coordinate_grid convention)."""
        grid = make_coordinate_grid((height, width), theta.device, theta.dtype)
        moved = self.transform((grid.view(-1, 2) + 1) / 2, theta)
        return (2 * moved - 1).view(theta.shape[0], height, width, 2)


def fit_theta(
    source_points: torch.Tensor,
    target_points: torch.Tensor,
    cpab: CPAB,
    iterations: int,
    lr: float = 1e-2,
) -> torch.Tensor:
    """Function form of CPAB.fit_theta (CPABMM's keypoint fit)."""
    return cpab.fit_theta(source_points, target_points, iterations, lr)


def warp_grid(cpab: CPAB, theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Function form of CPAB.warp_grid."""
    return cpab.warp_grid(theta, height, width)


__all__ = [
    "CPAB",
    "Tessellation",
    "constraint_matrix",
    "fit_theta",
    "null_space",
    "warp_grid",
]
