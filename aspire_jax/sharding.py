"""Placing an SMC run on several devices: particles split along axis 0.

The engine keeps every per-particle array on axis 0 (``x`` is
``(n_particles, n_dims)``, the cached densities and the log-weights are
``(n_particles,)``), so a run spreads over devices by giving those leaves the
sharding ``PartitionSpec("particles")`` on a one-dimensional mesh and
replicating everything else (inverse temperature, evidence, key, kernel
parameters). The jitted step is unchanged: the effective sample size, the
bisection on beta, the evidence increment and the kernel's Gaussian or
Student-t fit are ``jnp`` reductions over axis 0, which XLA turns into local
partial reductions followed by an all-reduce; resampling draws global ancestor
indices, so the gather after it moves particles between devices.

Typical use::

    mesh = particle_mesh(8)
    state = shard_state(smc.init(key, flow_params), mesh)
    step = jit_sharded_step(smc.step, state, mesh)
    flow_params = replicate(flow_params, mesh)
    state, info = step(state, flow_params)
    state = unshard_state(state)          # back on one device

Several hosts run one process each after ``jax.distributed.initialize()``;
``particle_mesh()`` then spans the devices of every process, every process
runs the same program on the same inputs, and only the process for which
:func:`is_checkpoint_writer` is true writes files.
"""

from collections.abc import Sequence
from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from .errors import ValidationError
from .smc.state import SMCState

__all__ = [
    "PARTICLE_AXIS",
    "particle_mesh",
    "as_mesh",
    "particle_sharding",
    "replicated_sharding",
    "state_shardings",
    "shard_state",
    "replicate",
    "unshard_state",
    "host_state",
    "sharded_template",
    "jit_sharded_init",
    "jit_sharded_step",
    "is_checkpoint_writer",
]

PARTICLE_AXIS = "particles"


def particle_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-dimensional mesh whose single axis is called ``"particles"``.

    Parameters
    ----------
    devices
        ``None`` for every device (of every process, after
        ``jax.distributed.initialize``), an int ``k`` for the first ``k`` of
        ``jax.devices()``, or an explicit sequence of devices.

    Returns
    -------
    jax.sharding.Mesh
        The mesh, with axis name :data:`PARTICLE_AXIS`.

    Raises
    ------
    ValidationError
        If the count is not in ``[1, jax.device_count()]`` or the sequence is
        empty or holds something other than devices.

    Examples
    --------
    >>> mesh = particle_mesh(1)
    >>> mesh.axis_names, mesh.size
    (('particles',), 1)
    """
    available = jax.devices()
    if devices is None:
        chosen = list(available)
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= int(devices) <= len(available):
            raise ValidationError(
                f"the device count must be between 1 and jax.device_count() = "
                f"{len(available)}; got {int(devices)}")
        chosen = list(available[: int(devices)])
    elif isinstance(devices, Sequence) and not isinstance(devices, (str, bytes)):
        chosen = list(devices)
        if not chosen or not all(isinstance(d, jax.Device) for d in chosen):
            raise ValidationError(
                "devices must be None, an int or a non-empty sequence of jax "
                f"devices; got {devices!r}")
    else:
        raise ValidationError(
            "devices must be None, an int or a non-empty sequence of jax devices; "
            f"got {type(devices).__name__}")
    return Mesh(np.asarray(chosen, dtype=object), (PARTICLE_AXIS,))


def as_mesh(mesh: Mesh | int | None) -> Mesh | None:
    """Accept a mesh, a device count or ``None`` (no placement).

    Parameters
    ----------
    mesh
        A mesh from :func:`particle_mesh`, a device count passed on to it, or
        ``None``.

    Returns
    -------
    jax.sharding.Mesh or None
        The mesh, or ``None`` for ``None``.

    Raises
    ------
    ValidationError
        If ``mesh`` is another type, or a mesh that is not one-dimensional
        with the axis ``"particles"``.
    """
    if mesh is None or isinstance(mesh, Mesh):
        if mesh is not None and tuple(mesh.axis_names) != (PARTICLE_AXIS,):
            raise ValidationError(
                f"the mesh must be one-dimensional with the axis {PARTICLE_AXIS!r}; "
                f"got axes {tuple(mesh.axis_names)} (build it with particle_mesh)")
        return mesh
    if isinstance(mesh, (int, np.integer)) and not isinstance(mesh, bool):
        return particle_mesh(int(mesh))
    raise ValidationError(
        "mesh must be None, a jax.sharding.Mesh from particle_mesh or an int "
        f"device count; got {type(mesh).__name__}")


def particle_sharding(mesh: Mesh) -> NamedSharding:
    """Split axis 0 over the mesh (``PartitionSpec("particles")``).

    Parameters
    ----------
    mesh
        A mesh from :func:`particle_mesh`.

    Returns
    -------
    jax.sharding.NamedSharding
        The sharding of the per-particle leaves.
    """
    return NamedSharding(mesh, PartitionSpec(PARTICLE_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh (``PartitionSpec()``).

    Parameters
    ----------
    mesh
        A mesh from :func:`particle_mesh`.

    Returns
    -------
    jax.sharding.NamedSharding
        The sharding of every leaf that is not per particle.
    """
    return NamedSharding(mesh, PartitionSpec())


def _n_particles(tree, n_particles: int | None) -> int:
    if n_particles is not None:
        return int(n_particles)
    if isinstance(tree, SMCState):
        return int(tree.x.shape[0])
    raise ValidationError(
        "n_particles must be given for a pytree that is not an SMCState; got "
        f"{type(tree).__name__} without n_particles")


def _check_divisible(n: int, mesh: Mesh) -> None:
    if n % mesh.size:
        lower, upper = n - n % mesh.size, n + mesh.size - n % mesh.size
        raise ValidationError(
            f"n_particles ({n}) must be a multiple of the number of devices in the "
            f"mesh ({mesh.size}); use {lower or upper} or {upper} particles, or a "
            "mesh whose size divides the particle count")


def state_shardings(tree, mesh: Mesh, n_particles: int | None = None):
    """The sharding of every leaf of ``tree`` under the particle layout.

    A leaf whose leading dimension equals ``n_particles`` is split along
    axis 0; every other leaf (scalars, kernel parameters, PRNG keys) is
    replicated.

    Parameters
    ----------
    tree
        An :class:`~aspire_jax.smc.SMCState` or any pytree of arrays or
        ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``).
    mesh
        A mesh from :func:`particle_mesh`.
    n_particles
        Particle count; taken from ``tree.x`` for an ``SMCState``.

    Returns
    -------
    pytree
        ``NamedSharding`` leaves, with the structure of ``tree``.

    Raises
    ------
    ValidationError
        If the particle count is not a multiple of the mesh size.

    Notes
    -----
    The rule is by shape, so a non-particle leaf whose leading dimension
    happens to equal the particle count (a ``(d, d)`` factor with
    ``d == n_particles``) is split too. That changes where it lives, never its
    values.
    """
    n = _n_particles(tree, n_particles)
    _check_divisible(n, mesh)
    split, whole = particle_sharding(mesh), replicated_sharding(mesh)

    def choose(leaf):
        shape = np.shape(leaf)
        return split if len(shape) >= 1 and shape[0] == n else whole

    return jax.tree_util.tree_map(choose, tree)


def shard_state(state, mesh: Mesh, n_particles: int | None = None):
    """Place ``state`` on ``mesh``: particle leaves split, the rest replicated.

    Parameters
    ----------
    state
        An :class:`~aspire_jax.smc.SMCState` (or a pytree, with
        ``n_particles``) on any device or devices.
    mesh
        A mesh from :func:`particle_mesh`.
    n_particles
        Particle count; taken from ``state.x`` for an ``SMCState``.

    Returns
    -------
    pytree
        The same values, placed. Leaves already placed as asked are not
        copied.

    Raises
    ------
    ValidationError
        If the particle count is not a multiple of the mesh size.

    Notes
    -----
    Under ``jax.distributed`` every process must pass the same values (the
    same key and configuration give the same state everywhere); each keeps
    the rows of its own devices.
    """
    return jax.device_put(state, state_shardings(state, mesh, n_particles))


def replicate(tree, mesh: Mesh):
    """A full copy of every leaf of ``tree`` on every device of ``mesh``.

    Use it for the flow parameters a sharded step takes alongside the state.

    Parameters
    ----------
    tree
        A pytree of arrays, the same on every process.
    mesh
        A mesh from :func:`particle_mesh`.

    Returns
    -------
    pytree
        The same values, replicated.
    """
    whole = replicated_sharding(mesh)
    return jax.device_put(tree, jax.tree_util.tree_map(lambda _: whole, tree))


def _to_device(leaf, target: SingleDeviceSharding):
    if not isinstance(leaf, jax.Array):
        return leaf
    if not leaf.is_fully_addressable:
        if leaf.is_fully_replicated:
            leaf = leaf.addressable_data(0)
        else:
            # A collective: every process must reach this call.
            leaf = multihost_utils.process_allgather(leaf, tiled=True)
    return jax.device_put(leaf, target)


def unshard_state(state, device: jax.Device | None = None):
    """Gather every leaf of ``state`` onto one device.

    Parameters
    ----------
    state
        A pytree of arrays, sharded or not.
    device
        Target device; the first local device by default.

    Returns
    -------
    pytree
        The same values, each leaf a single-device array.

    Notes
    -----
    Leaves split over several processes are gathered with
    ``jax.experimental.multihost_utils.process_allgather``, a collective:
    under ``jax.distributed`` every process must call this function at the
    same point, and every process receives the whole state.
    """
    target = SingleDeviceSharding(jax.local_devices()[0] if device is None
                                  else device)
    return jax.tree_util.tree_map(lambda leaf: _to_device(leaf, target), state)


def _to_host(leaf):
    if not isinstance(leaf, jax.Array):
        return leaf
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return _to_device(leaf, SingleDeviceSharding(jax.local_devices()[0]))
    if not leaf.is_fully_addressable and not leaf.is_fully_replicated:
        return multihost_utils.process_allgather(leaf, tiled=True)
    if not leaf.is_fully_addressable:
        leaf = leaf.addressable_data(0)
    return np.asarray(leaf)


def host_state(state):
    """Copy every array leaf of ``state`` to host memory as numpy.

    Unlike :func:`unshard_state`, the particles never sit on one device, so
    a population larger than one device's memory can still be saved.

    Parameters
    ----------
    state
        A pytree of arrays, sharded or not.

    Returns
    -------
    pytree
        numpy arrays in place of the array leaves; PRNG keys, which numpy
        cannot hold, come back as single-device keys.

    Notes
    -----
    Like :func:`unshard_state` this is a collective under ``jax.distributed``:
    every process must call it at the same point.
    """
    return jax.tree_util.tree_map(_to_host, state)


def sharded_template(template, mesh: Mesh):
    """``jax.ShapeDtypeStruct`` leaves of ``template`` carrying their shardings.

    Parameters
    ----------
    template
        A state or its ``jax.eval_shape``.
    mesh
        A mesh from :func:`particle_mesh`.

    Returns
    -------
    pytree
        The template, each leaf with the sharding of :func:`state_shardings`.

    Notes
    -----
    A checkpoint restored against it (``aspire_jax.io.state_from_bytes``)
    places each array leaf on a mesh of several devices as it is read, so no
    device holds the whole population on the way. PRNG keys, and every leaf
    on a one-device mesh, are restored unplaced; :func:`shard_state` places
    them.
    """
    shardings = state_shardings(template, mesh)
    return jax.tree_util.tree_map(
        lambda t, s: jax.ShapeDtypeStruct(np.shape(t), t.dtype, sharding=s),
        template, shardings)


def jit_sharded_init(init: Callable, template, mesh: Mesh) -> Callable:
    """Jit ``init(key, flow_params)`` so that its state comes out placed.

    Each device computes the rows of its own particles, so the full
    population never sits on one device.

    Parameters
    ----------
    init
        ``init(key, flow_params) -> SMCState``, e.g. ``SMCAlgorithm.init``.
    template
        The state's shape, e.g. ``jax.eval_shape(init, key, flow_params)``.
    mesh
        A mesh from :func:`particle_mesh`.

    Returns
    -------
    Callable
        The jitted ``init``; pass flow parameters placed with
        :func:`replicate`.
    """
    return jax.jit(init, out_shardings=state_shardings(template, mesh))


def jit_sharded_step(step: Callable, template, mesh: Mesh) -> Callable:
    """Jit ``step(state, flow_params)`` with its shardings fixed on both sides.

    Parameters
    ----------
    step
        ``step(state, flow_params) -> (state, info)``, e.g.
        ``SMCAlgorithm.step``.
    template
        A state (or its ``jax.eval_shape``) giving the particle count.
    mesh
        A mesh from :func:`particle_mesh`.

    Returns
    -------
    Callable
        The jitted step. It takes a state placed by :func:`shard_state` and
        flow parameters placed by :func:`replicate`, and returns the new state
        in the same layout and a replicated info.

    Notes
    -----
    Without ``out_shardings`` XLA chooses the layout of the returned state by
    propagation. Nothing guarantees that it is the layout the step was given:
    a different one would make the next call compile again, and a replicated
    population would hold every particle on every device. Fixing both sides
    makes one compilation serve every iteration, and moves a state placed
    otherwise into the layout on the way in.
    """
    shardings = state_shardings(template, mesh)
    whole = replicated_sharding(mesh)
    return jax.jit(step, in_shardings=(shardings, whole),
                   out_shardings=(shardings, whole))


def is_checkpoint_writer() -> bool:
    """Whether this process writes checkpoints and other files.

    Returns
    -------
    bool
        True for process 0, so always in a single-process run. Under
        ``jax.distributed`` every process gathers the state (a collective) and
        only this one writes it.
    """
    return jax.process_index() == 0

