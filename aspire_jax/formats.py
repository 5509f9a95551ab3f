"""Read posterior samples from the files other tools write, and hand results on.

Readers return :class:`~aspire_jax.samples.Samples`; :func:`read_samples`
picks the reader from the object or the file name:

| format         | file or object                              | reader             |
| -------------- | ------------------------------------------- | ------------------ |
| ``bilby_json`` | bilby ``*_result.json`` (or ``.json.gz``)   | read_bilby_result  |
| ``bilby_hdf5`` | bilby ``*_result.hdf5``                     | read_bilby_result  |
| ``hdf5``       | ``.h5`` written by ``Samples.save``         | read_hdf5          |
| ``table``      | ``.csv``, ``.tsv``, ``.dat``, ``.txt``      | read_table         |
| ``npy``        | ``.npy``, plain or structured               | read_array         |
| ``npz``        | ``.npz``, columns or ``x`` + ``parameters`` | read_array         |
| ``netcdf``     | ArviZ ``.nc``                               | read_netcdf        |
| (objects)      | ``InferenceData``, ``DataFrame``, dicts,    | from_arviz,        |
|                | bilby ``Result``, arrays, ``Samples``       | from_dataframe     |

Writers: :func:`write_samples` (by suffix), :func:`write_bilby_result`,
:func:`write_table`, :func:`to_bilby_posterior`, :func:`to_arviz` and
:func:`to_dataframe`.

Nothing here unpickles: ``numpy.load`` runs with ``allow_pickle=False`` and
bilby's JSON is parsed with :mod:`json`, its encoded arrays and tables being
decoded by hand (class and function references stay strings and nothing is
imported from the file's names).

Vector-valued quantities are flattened into named scalar parameters in C
order: a variable ``theta`` of shape ``(3,)`` becomes ``theta[0]``,
``theta[1]``, ``theta[2]``; shape ``(2, 2)`` gives ``w[0,0]``, ``w[0,1]``, ...
"""

import gzip
import json
import os
import re
import warnings
import zipfile
from typing import Mapping, Sequence

import numpy as np

from aspire_jax.errors import ValidationError
from aspire_jax.io.hdf5 import AspireFile
from aspire_jax.samples import Samples

__all__ = [
    "FORMATS",
    "read_samples",
    "write_samples",
    "read_bilby_result",
    "write_bilby_result",
    "to_bilby_posterior",
    "read_table",
    "write_table",
    "read_array",
    "read_hdf5",
    "read_netcdf",
    "from_arviz",
    "to_arviz",
    "from_dataframe",
    "to_dataframe",
    "flat_parameter_names",
]

FORMATS = ("bilby_json", "bilby_hdf5", "hdf5", "table", "npy", "npz", "netcdf")
_FIELDS = ("log_likelihood", "log_prior", "log_q", "log_weights")
_SCALARS = ("log_evidence", "log_evidence_error")
_TABLE_SUFFIXES = (".csv", ".tsv", ".dat", ".txt")
_NAME = re.compile(r"^(?P<base>.+)\[(?P<index>\d+(?:,\d+)*)\]$")


# ---------------------------------------------------------------- names


def flat_parameter_names(name: str, shape: Sequence[int]) -> list[str]:
    """Names of the scalar parameters of a variable of the given shape.

    Parameters
    ----------
    name : str
        Variable name.
    shape : Sequence[int]
        Shape of one draw of the variable; ``()`` for a scalar.

    Returns
    -------
    list[str]
        ``[name]`` for a scalar, else ``name[i,j,...]`` in C order.

    Examples
    --------
    >>> flat_parameter_names("theta", (2,))
    ['theta[0]', 'theta[1]']
    >>> flat_parameter_names("w", (1, 2))
    ['w[0,0]', 'w[0,1]']
    """
    shape = tuple(int(s) for s in shape)
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]


def _group_names(names: Sequence[str]) -> list[tuple[str, tuple, list[int]]]:
    """Regroup flat names into variables: ``(name, shape, column indices)``.

    Columns named ``v[i,...]`` that together fill a complete C-ordered grid
    become one variable ``v``; anything else stays a scalar of its own name.
    """
    groups: dict[str, list[tuple[tuple[int, ...], int]]] = {}
    for col, name in enumerate(names):
        m = _NAME.match(name)
        if m:
            index = tuple(int(i) for i in m["index"].split(","))
            groups.setdefault(m["base"], []).append((index, col))
    out, used = [], set()
    for base, entries in groups.items():
        ndim = {len(i) for i, _ in entries}
        if len(ndim) != 1 or base in names:
            continue
        shape = tuple(max(i[k] for i, _ in entries) + 1 for k in range(ndim.pop()))
        if [i for i, _ in entries] != list(np.ndindex(*shape)):
            continue
        out.append((base, shape, [c for _, c in entries]))
        used.update(c for _, c in entries)
    singles = [(n, (), [c]) for c, n in enumerate(names) if c not in used]
    return sorted(out + singles, key=lambda g: g[2][0])


# ---------------------------------------------------------------- helpers


def _equal_weights(samples: Samples, key, what: str) -> Samples:
    """Return ``samples`` unchanged if unweighted, else resampled with ``key``
    (a typed key or an int seed, as :meth:`Samples.resample` takes)."""
    lw = samples.log_weights
    if lw is None:
        return samples
    lw = np.asarray(lw)
    if np.all(lw == lw[0]):
        return samples.replace(log_weights=None)
    if key is None:
        raise ValidationError(
            f"{what} are weighted, and this needs equally weighted draws; pass "
            "key=jax.random.key(seed) (or an int seed) to resample them")
    return samples.resample(key)


def _column(values, name: str, where: str) -> np.ndarray | None:
    """A float column, or None if the values are not one number per sample
    (strings, or an array per sample such as a bilby waveform column): such
    a column is left out unless it is asked for, which then fails."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):
        return None
    if arr.dtype.kind not in "biuf" or arr.ndim != 1:
        return None
    # float64 and integers of 32 bits or more keep float64 (GPS times need
    # it); Samples then holds the array dtype in use.
    wide = arr.dtype == np.float64 or (arr.dtype.kind in "iu" and arr.itemsize >= 4)
    return arr.astype(np.float64 if wide else np.float32)


def _add_column(columns: dict, name: str, values, where: str) -> None:
    """Add a column, refusing a name already taken (two variables that
    flatten to the same name: one would be lost)."""
    if name in columns:
        raise ValidationError(
            f"{where} gives the column {name!r} twice (a variable of that name and "
            "an element of a vector variable, say); one would be lost. Rename one")
    columns[name] = _column(values, name, where)


# Column names other tools give to per-sample quantities that are not
# parameters (LALInference's logl and logprior, weights, a saved index).
_NOT_PARAMETERS = {"logl": "log_likelihood", "loglikelihood": "log_likelihood",
                   "logprior": "log_prior", "logpost": "the log posterior",
                   "log_posterior": "the log posterior", "weights": "weights",
                   "weight": "weights", "logw": "log_weights",
                   "unnamed: 0": "a saved index", "index": "a saved index"}


def _warn_field_like(names, where: str) -> None:
    """Warn when columns taken as parameters by default look like per-sample
    quantities of another tool: a flow fitted on them would be wrong."""
    odd = [(n, _NOT_PARAMETERS[n.lower()]) for n in names if n.lower() in _NOT_PARAMETERS]
    if odd:
        warnings.warn(
            f"{where}: the column(s) {[n for n, _ in odd]} look like "
            f"{', '.join(sorted({w for _, w in odd}))}, not parameters, but are taken "
            "as parameters; pass parameters=[...] to choose them (aspire_jax reads "
            "log_likelihood, log_prior, log_q and log_weights columns as such)",
            UserWarning, stacklevel=3)


def _select(samples: Samples, parameters, where: str) -> Samples:
    """``samples`` restricted to ``parameters``, named as a reader's error."""
    _check_names_list(parameters)
    missing = [p for p in parameters if p not in samples.parameters]
    if missing:
        raise ValidationError(
            f"{where} has no parameters {missing}; it has {list(samples.parameters)}")
    return samples[list(parameters)]


def _check_names_list(parameters) -> None:
    """``parameters`` must be None or a sequence of names, not one string."""
    if isinstance(parameters, str):
        raise ValidationError(
            f"parameters must be a list of names; got the string {parameters!r} "
            f"(use [{parameters!r}])")


def _from_columns(
    columns: Mapping[str, np.ndarray],
    parameters,
    where: str,
    default: Sequence[str] | None = None,
    scalars: Mapping | None = None,
) -> Samples:
    """Samples from named columns, choosing the parameters and fields."""
    if parameters is not None:
        _check_names_list(parameters)
        names = list(parameters)
        missing = [p for p in names if p not in columns]
        if missing:
            raise ValidationError(
                f"{where} has no columns {missing}; its columns are {list(columns)}"
            )
        bad = [p for p in names if columns[p] is None]
        if bad:
            raise ValidationError(
                f"columns {bad} of {where} are not one number per sample")
    elif default is not None:
        missing = [p for p in default if p not in columns]
        bad = [p for p in default if p in columns and columns[p] is None]
        if missing or bad:
            raise ValidationError(
                f"{where} names search parameters {list(default)}, but "
                + "; ".join(
                    ([f"{missing} are not columns of its posterior"] if missing
                     else [])
                    + ([f"{bad} are not numeric there"] if bad else []))
                + f". Its columns are {list(columns)}; pass parameters=[...] to "
                "choose them")
        names = list(default)
    else:
        names = [
            k for k, v in columns.items()
            if v is not None and k not in _FIELDS + _SCALARS
        ]
        _warn_field_like(names, where)
    if not names:
        raise ValidationError(
            f"{where} has no numeric parameter columns; its columns are "
            f"{list(columns)}"
        )
    lengths = {p: len(columns[p]) for p in names}
    if len(set(lengths.values())) != 1:
        raise ValidationError(f"columns of {where} differ in length: {lengths}")
    fields = {}
    for k in _FIELDS:
        if k in columns and k not in names:
            if columns[k] is None:
                warnings.warn(
                    f"the {k!r} column of {where} is not one number per sample (it "
                    "holds null or text entries) and is left out", UserWarning,
                    stacklevel=3)
            else:
                fields[k] = columns[k]
    scalars = dict(scalars or {})
    for k in _SCALARS:
        values = columns.get(k)
        if values is None or k in names:
            continue
        # A column repeating one number (as a table of every sample's
        # attributes carries it) is that number; a varying one is no evidence.
        if values.size and np.all(values == values[0]):
            if scalars.get(k) is None:
                scalars[k] = float(values[0])
        elif parameters is None:
            raise ValidationError(
                f"the {k!r} column of {where} varies from row to row; it must be "
                "one number (write it as a '# log_evidence = ...' comment line, or "
                "pass parameters=[...] to leave it out)")
    for k, v in scalars.items():
        if v is not None and np.isfinite(v):
            fields[k] = float(v)
    x = np.stack([columns[p] for p in names], axis=1)
    return Samples.from_array(x, names, **fields)


def _suffix(path) -> str:
    name = os.fspath(path).lower()
    if name.endswith(".json.gz"):
        return ".json.gz"
    return os.path.splitext(name)[1]


def _check_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ValidationError(
            f"expected a file path; got {type(path).__name__} {path!r}"
        )
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no file at {path!r}")
    return path


# ---------------------------------------------------------------- dispatch


def _detect(path: str) -> str:
    suffix = _suffix(path)
    if suffix in (".json", ".json.gz"):
        return "bilby_json"
    if suffix in (".h5", ".hdf5"):
        import h5py

        if not h5py.is_hdf5(path):
            raise ValidationError(
                f"{path!r} is not an HDF5 file (truncated, or another format with "
                "an .h5 suffix)")
        with AspireFile(path, "r") as f:
            if "posterior" in f and _samples_group(f) is None:
                return "bilby_hdf5"
        return "hdf5"
    if suffix in _TABLE_SUFFIXES:
        return "table"
    if suffix in (".npy", ".npz"):
        return suffix[1:]
    if suffix in (".nc", ".netcdf", ".nc4"):
        return "netcdf"
    raise ValidationError(
        f"cannot tell the format of {path!r} from its suffix {suffix!r}; pass "
        f"format= one of {list(FORMATS)}"
    )


def _from_object(obj, parameters) -> Samples:
    if isinstance(obj, Samples):
        return obj if parameters is None else _select(obj, parameters, "the Samples")
    if type(obj).__module__.split(".")[0] == "pandas" and hasattr(obj, "columns"):
        return from_dataframe(obj, parameters=parameters)
    if hasattr(obj, "posterior") and hasattr(obj, "search_parameter_keys"):
        return _from_bilby_object(obj, parameters)
    if hasattr(obj, "posterior") or type(obj).__name__ in ("InferenceData", "DataTree"):
        return from_arviz(obj, parameters=parameters)
    if isinstance(obj, Mapping):
        return _from_mapping(obj, parameters, "the dict")
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
        return _from_ndarray(np.asarray(obj), parameters, "the array")
    raise ValidationError(
        f"cannot read samples from a {type(obj).__name__}; pass a file path, "
        "Samples, a pandas DataFrame, a dict of columns, an ArviZ InferenceData, "
        "a bilby Result or an array"
    )


def read_samples(path_or_obj, *, parameters=None, format: str | None = None) -> Samples:
    """Read samples from a file or an in-memory object of another tool.

    Parameters
    ----------
    path_or_obj : str or os.PathLike or object
        A file (see the module table for the suffixes understood), or a
        :class:`Samples`, ``pandas.DataFrame``, dict of columns, ArviZ
        ``InferenceData``, bilby ``Result`` or numpy array.
    parameters : Sequence[str] or None
        For named columns: which to keep and in what order (default: the
        search parameters of a bilby result, else every numeric column that
        is not ``log_likelihood``, ``log_prior``, ``log_q`` or
        ``log_weights``). For plain arrays: the column names.
    format : str or None
        One of :data:`FORMATS` to override detection from the suffix.

    Returns
    -------
    Samples

    Raises
    ------
    ValidationError
        If the format is unknown or the content has no usable columns.
    FileNotFoundError
        If the path does not exist.

    Examples
    --------
    >>> s = read_samples({"a": [0.0, 1.0], "log_likelihood": [-1.0, -2.0]})
    >>> s.parameters, s.log_likelihood.tolist()
    (('a',), [-1.0, -2.0])
    """
    _check_names_list(parameters)
    if not isinstance(path_or_obj, (str, os.PathLike)):
        if format is not None:
            raise ValidationError("format= applies to file paths only")
        return _from_object(path_or_obj, parameters)
    path = _check_path(path_or_obj)
    if format is None:
        format = _detect(path)
    if format not in FORMATS:
        raise ValidationError(f"format must be one of {list(FORMATS)}; got {format!r}")
    if format in ("bilby_json", "bilby_hdf5"):
        return read_bilby_result(path, parameters=parameters, format=format)
    if format == "hdf5":
        return read_hdf5(path, parameters=parameters)
    if format == "table":
        return read_table(path, parameters=parameters)
    if format in ("npy", "npz"):
        return read_array(path, parameters=parameters, format=format)
    return read_netcdf(path, parameters=parameters)


def write_samples(path, samples: Samples, *, key=None, format: str | None = None,
                  **options) -> None:
    """Write samples in the format given by the suffix of ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        ``.h5`` / ``.hdf5`` (:meth:`Samples.save`), ``.json`` (bilby result,
        :func:`write_bilby_result`), ``.csv`` / ``.tsv`` / ``.dat`` / ``.txt``
        (:func:`write_table`), ``.npz`` (:meth:`Samples.to_numpy` arrays) or
        ``.nc`` (ArviZ NetCDF via :func:`to_arviz`).
    samples : Samples
        The samples to write.
    key : jax.Array or int or None
        Needed for weighted samples in the formats that hold equally weighted
        draws only (bilby JSON and NetCDF), which resample them.
    format : str or None
        ``"hdf5"``, ``"bilby_json"``, ``"table"``, ``"npz"`` or ``"netcdf"``
        to override the suffix.
    **options
        Passed on to the writer (e.g. ``label`` for bilby, ``delimiter`` for
        tables, ``group`` for the HDF5 group, default ``"samples"``).

    Raises
    ------
    ValidationError
        If the format is unknown, or weighted samples need a key.
    """
    if not isinstance(samples, Samples):
        raise ValidationError(f"samples must be Samples; got {type(samples).__name__}")
    if format is None:
        suffix = _suffix(path)
        format = {".h5": "hdf5", ".hdf5": "hdf5", ".json": "bilby_json",
                  ".npz": "npz", ".nc": "netcdf"}.get(suffix)
        if format is None and suffix in _TABLE_SUFFIXES:
            format = "table"
    if format == "hdf5":
        group = options.pop("group", "samples")
        _reject_unknown(options, "HDF5", ("group",))
        samples.save(path, group)
    elif format == "bilby_json":
        _reject_unknown(options, "bilby JSON", ("label", "meta_data"))
        write_bilby_result(path, samples, key=key, **options)
    elif format == "table":
        _reject_unknown(options, "table", ("delimiter",))
        write_table(path, samples, **options)
    elif format == "npz":
        _reject_unknown(options, ".npz")
        np.savez(path, **samples.to_numpy())
    elif format == "netcdf":
        idata = to_arviz(samples, key=key)
        try:
            idata.to_netcdf(os.fspath(path), **options)
        except TypeError as exc:
            if not options:
                raise
            raise ValidationError(
                f"options {sorted(options)} are not taken by ArviZ's "
                f"InferenceData.to_netcdf, which NetCDF files are written with: {exc}"
            ) from exc
    else:
        what = (f"unknown format {format!r} (formats: 'hdf5', 'bilby_json', "
                "'table', 'npz', 'netcdf')" if format is not None else
                "gzip-compressed files are read but not written"
                if os.fspath(path).endswith(".gz") else "no format for its suffix")
        raise ValidationError(
            f"cannot write {os.fspath(path)!r}: {what}; use a "
            ".h5, .json, .csv, .tsv, .dat, .txt, .npz or .nc suffix, or format="
        )


# ---------------------------------------------------------------- bilby


def _decode_bilby(obj: dict):
    """json object hook for bilby's encoded values; imports nothing."""
    if obj.get("__array__"):
        content = obj["content"]
        arr = np.asarray(content)
        return arr if arr.dtype.kind in "biufc" else content
    if obj.get("__complex__"):
        return complex(obj["real"], obj["imag"])
    if obj.get("__dataframe__") or obj.get("__series__"):
        return obj["content"]
    if obj.get("__function__") or obj.get("__class__"):
        return f"{obj.get('__module__')}.{obj.get('__name__')}"
    return obj


def _reject_unknown(options: Mapping, what: str, known: Sequence[str] = ()) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = (f"; they take {', '.join(map(repr, known))}" if known
                 else "; they take none")
        raise ValidationError(f"unknown options {unknown} for {what} files{takes}")


def _bilby_json(path: str) -> dict:
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh, object_hook=_decode_bilby)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as exc:
        # EOFError: a gzip stream cut short (a truncated download or copy).
        raise ValidationError(f"{path!r} is not a readable JSON file: {exc!r}") from exc
    except RecursionError as exc:
        raise ValidationError(f"{path!r} nests JSON too deeply to be a bilby result "
                              "file") from exc
    if not isinstance(data, dict) or "posterior" not in data:
        raise ValidationError(
            f"{path!r} is JSON but has no 'posterior' entry; expected a bilby result "
            "file (Result.save_to_file)"
        )
    return data


def _h5_value(v):
    v = v[()]
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.dtype.kind in "OS":
        return [s.decode() if isinstance(s, bytes) else str(s) for s in v.ravel()]
    return v


def _bilby_hdf5(path: str) -> dict:
    import h5py

    with AspireFile(path, "r") as f:
        post = f.get("posterior")
        if not isinstance(post, h5py.Group):
            raise ValidationError(
                f"{path!r} has no /posterior group; expected a bilby result file"
            )
        data = {"posterior": {k: post[k][()] for k in post
                              if isinstance(post[k], h5py.Dataset)}}
        for k in ("search_parameter_keys", "log_evidence", "log_evidence_err"):
            if k in f and isinstance(f[k], h5py.Dataset):
                data[k] = _h5_value(f[k])
    return data


def _bilby_samples(data: dict, parameters, where: str) -> Samples:
    post = data["posterior"]
    if not isinstance(post, Mapping):
        raise ValidationError(f"the posterior of {where} is not a table of columns")
    columns = {str(k): _column(v, str(k), where) for k, v in post.items()}
    keys = data.get("search_parameter_keys")
    if isinstance(keys, str) or keys is None or (
            isinstance(keys, np.ndarray) and keys.dtype.kind not in "OSU"):
        keys = None
    else:
        # An empty list names nothing: every numeric column, as without one.
        keys = [str(k) for k in keys] or None
    scalars = {"log_evidence": _finite_or_none(data.get("log_evidence")),
               "log_evidence_error": _finite_or_none(data.get("log_evidence_err"))}
    return _from_columns(columns, parameters, where, default=keys, scalars=scalars)


def _finite_or_none(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _from_bilby_object(result, parameters) -> Samples:
    post = result.posterior
    data = {"posterior": {c: np.asarray(post[c]) for c in post.columns},
            "search_parameter_keys": result.search_parameter_keys,
            "log_evidence": getattr(result, "log_evidence", None),
            "log_evidence_err": getattr(result, "log_evidence_err", None)}
    return _bilby_samples(data, parameters, "the bilby result")


def read_bilby_result(path, *, parameters=None, format: str | None = None) -> Samples:
    """Read the posterior of a bilby result file (JSON, gzipped JSON or HDF5).

    Parameters
    ----------
    path : str or os.PathLike
        A file written by bilby's ``Result.save_to_file``.
    parameters : Sequence[str] or None
        Posterior columns to keep; default: the result's
        ``search_parameter_keys`` (the sampled parameters), else every numeric
        column.
    format : str or None
        ``"bilby_json"`` or ``"bilby_hdf5"``; by default from the suffix.

    Returns
    -------
    Samples
        Equally weighted, with ``log_likelihood`` / ``log_prior`` when the
        posterior has those columns and the result's evidence when finite.

    Raises
    ------
    ValidationError
        If the file is not a bilby result or a requested column is missing.
    """
    path = _check_path(path)
    if format is None:
        format = "bilby_hdf5" if _suffix(path) in (".h5", ".hdf5") else "bilby_json"
    if format == "bilby_json":
        data = _bilby_json(path)
    elif format == "bilby_hdf5":
        data = _bilby_hdf5(path)
    else:
        raise ValidationError(
            f"format must be 'bilby_json' or 'bilby_hdf5'; got {format!r}")
    return _bilby_samples(data, parameters, repr(path))


def to_bilby_posterior(samples: Samples, *, key=None, as_dataframe: bool = True):
    """A bilby-style posterior table: one column per parameter, then
    ``log_likelihood`` and ``log_prior`` where known.

    Parameters
    ----------
    samples : Samples
        The samples; weighted samples are first resampled to equal weights
        (bilby posteriors are equally weighted draws), which needs ``key``.
    key : jax.Array or int or None
        Typed key or int seed for that resampling.
    as_dataframe : bool
        Return a ``pandas.DataFrame`` (needs pandas); False gives a dict of
        numpy columns.

    Returns
    -------
    pandas.DataFrame or dict[str, numpy.ndarray]

    Raises
    ------
    ValidationError
        If the samples are weighted and no key is given.
    """
    samples = _equal_weights(samples, key, "the samples")
    x = np.asarray(samples.x)
    table = {name: x[:, i] for i, name in enumerate(samples.parameters)}
    extra = [k for k in ("log_likelihood", "log_prior")
             if getattr(samples, k) is not None]
    # Readers take these columns for fields, so a parameter cannot use them.
    _refuse_clash(samples.parameters, ("log_likelihood", "log_prior"),
                  "a bilby posterior")
    for k in extra:
        table[k] = np.asarray(getattr(samples, k))
    if not as_dataframe:
        return table
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError('a DataFrame needs pandas: pip install "aspire-jax[pandas]"'
                          " (or pass as_dataframe=False)") from exc
    return pd.DataFrame(table)


def _json_number(v):
    v = float(v)
    return v if np.isfinite(v) else float("nan")


def write_bilby_result(path, samples: Samples, *, key=None, label: str | None = None,
                       meta_data: Mapping | None = None) -> None:
    """Write a bilby result JSON file that ``bilby.read_in_result`` can read.

    Parameters
    ----------
    path : str or os.PathLike
        Output ``.json`` file.
    samples : Samples
        The posterior; weighted samples are resampled to equal weights with
        ``key`` first (see :func:`to_bilby_posterior`).
    key : jax.Array or int or None
        Typed key or int seed, needed for weighted samples.
    label : str or None
        The result's label; default: the file name without ``_result.json``.
    meta_data : Mapping or None
        JSON-able extra information stored under ``meta_data``.

    Raises
    ------
    ValidationError
        If the suffix is not ``.json`` or weighted samples have no key.

    Notes
    -----
    The file holds the posterior table (as bilby's encoded DataFrame), the
    search parameter keys, the evidence and its error (NaN when unknown) and
    ``sampler = "aspire_jax"``. No priors are written: bilby reads the file
    with ``priors=None``.
    """
    from aspire_jax import __version__

    path = os.fspath(path)
    if not path.lower().endswith(".json"):
        raise ValidationError(f"bilby result files end in .json; got {path!r}")
    table = to_bilby_posterior(samples, key=key, as_dataframe=False)
    if label is None:
        label = os.path.basename(path)[: -len(".json")]
        label = label[: -len("_result")] if label.endswith("_result") else label
    names = list(samples.parameters)
    evidence = {k: getattr(samples, k) for k in _SCALARS}
    data = {
        "label": label,
        "outdir": os.path.dirname(os.path.abspath(path)),
        "sampler": "aspire_jax",
        "log_evidence": _json_number(
            np.nan if evidence["log_evidence"] is None else evidence["log_evidence"]),
        "log_evidence_err": _json_number(
            np.nan if evidence["log_evidence_error"] is None
            else evidence["log_evidence_error"]),
        "log_noise_evidence": float("nan"),
        "log_bayes_factor": float("nan"),
        "priors": None,
        "posterior": {"__dataframe__": True,
                      "content": {k: np.asarray(v, float).tolist()
                                  for k, v in table.items()}},
        "search_parameter_keys": names,
        "fixed_parameter_keys": [],
        "constraint_parameter_keys": [],
        "parameter_labels": names,
        "parameter_labels_with_unit": names,
        "meta_data": dict(meta_data or {}),
        "version": f"aspire_jax={__version__}",
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)


# ---------------------------------------------------------------- tables


def _scalar_comment(text: str, scalars: dict) -> bool:
    """Read a ``# log_evidence = v`` (or ``_error``) comment line into
    ``scalars``; whether ``text`` was one."""
    body = text.strip().lstrip("#").strip()
    m = re.match(r"^(log_evidence(?:_error)?)\s*[=:]\s*(\S+)$", body)
    if not m:
        return False
    try:
        scalars[m[1]] = float(m[2])
    except ValueError:
        raise ValidationError(
            f"the comment line {text.strip()!r} must give {m[1]} as a number"
        ) from None
    return True


def _header(lines: list[str], delimiter: str | None):
    """Index of the first data line, the column names and the scalars.

    The header is the first non-comment line, or else a comment line before
    the data (as ``numpy.savetxt(header=...)`` writes): the last one with as
    many names as the first data row has values and no name that is a
    number, so that a comment such as ``# seed 42`` is not taken for it.
    """
    scalars, comments = {}, []
    for i, line in enumerate(lines):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            body = line.rstrip("\r\n").lstrip(" ").lstrip("#").strip(" ")
            if not _scalar_comment(text, scalars):
                comments.append(body)
            continue
        if _numeric_line(text):
            n_values = len(_split_row(text, delimiter))
            for body in reversed(comments):
                names, used = _split_names(body, delimiter)
                if len(names) == n_values and not any(_is_number(n) for n in names):
                    return i, (names, used), scalars
            return None
        return i + 1, _split_names(line.rstrip("\r\n").lstrip(" "), delimiter), scalars
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric_line(text: str) -> bool:
    try:
        [float(v) for v in re.split(r"[,\s]+", text.strip(", \t")) if v]
    except ValueError:
        return False
    return True


def _split_row(text: str, delimiter: str | None) -> list[str]:
    return text.strip().split(delimiter) if delimiter else text.split()


def _split_names(text: str, delimiter: str | None = None
                 ) -> tuple[list[str], str | None]:
    """Names of a header line and the delimiter of the table: ``delimiter``
    when the suffix fixes it, else a tab if the line has one, else a comma,
    else white space."""
    if delimiter is None:
        delimiter = "\t" if "\t" in text else ("," if "," in text else None)
    parts = text.split(delimiter) if delimiter else text.split()
    names = [n.strip().strip("\"'") for n in parts]
    return names, delimiter


def read_table(path, *, parameters=None) -> Samples:
    """Read a text table with a header line (CSV, tab- or space-separated).

    Parameters
    ----------
    path : str or os.PathLike
        The file. The header is the first non-comment line, or the last
        comment line before the data (as ``numpy.savetxt(header=...)``
        writes). Columns named ``log_likelihood``, ``log_prior``, ``log_q``
        and ``log_weights`` fill those fields; comment lines
        ``# log_evidence = v`` and ``# log_evidence_error = v`` the evidence.
        An unnamed first column (a pandas index) is dropped.
    parameters : Sequence[str] or None
        Columns to keep as parameters; default: all other numeric columns.

    Returns
    -------
    Samples

    Raises
    ------
    ValidationError
        If there is no header or the rows have the wrong number of values.
    """
    path = _check_path(path)
    try:
        # utf-8-sig drops the byte-order mark some tools write.
        with open(path, encoding="utf-8-sig") as fh:
            lines = fh.readlines()
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"{path!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); save "
            "it as UTF-8, or it is not a text table") from exc
    suffix = _suffix(path)
    fixed = {".csv": ",", ".tsv": "\t"}.get(suffix)
    found = _header(lines, fixed)
    if found is None:
        raise ValidationError(
            f"{path!r} has no header line naming its columns; add one (e.g. "
            "'a,b,log_likelihood') or load the numbers with numpy and use "
            "Samples.from_array(x, parameters=[...])"
        )
    start, (names, delimiter), scalars = found
    named = [n for n in names if n]
    twice = sorted({n for n in named if named.count(n) > 1})
    if twice:
        raise ValidationError(
            f"{path!r} names the columns {twice} more than once; one of each would "
            "be lost. Rename them")
    rows = []
    for ln in lines[start:]:
        if ln.lstrip().startswith("#"):
            # Wherever the evidence is given, it is read.
            _scalar_comment(ln, scalars)
        elif ln.strip():
            rows.append(ln)
    if not rows:
        raise ValidationError(f"{path!r} has a header but no rows of values")
    try:
        data = np.loadtxt(rows, delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        # numpy's message may advise options of its own (usecols) that
        # read_table does not take: name the row and the counts instead.
        message = str(exc).split(" Use ")[0].split("; use ")[0].rstrip(".")
        raise ValidationError(
            f"cannot parse the rows of {path!r}: {message}. Every row must hold "
            "one number per column of the header") from exc
    if data.shape[1] != len(names):
        raise ValidationError(
            f"{path!r} has {len(names)} header names {names} but {data.shape[1]} "
            "values per row"
        )
    columns = {n: data[:, i] for i, n in enumerate(names) if not (i == 0 and n == "")}
    return _from_columns(columns, parameters, repr(path), scalars=scalars)


def _unreadable_names(names, delimiter: str) -> list[str]:
    """The names that a ``delimiter``-separated header cannot hold and give back."""
    return [n for n in names
            if delimiter in n or "\n" in n or n != n.strip() or n.startswith("#")
            or any(q in n for q in "\"'") or _is_number(n)
            or (delimiter.isspace() and any(c.isspace() for c in n))]


def write_table(path, samples: Samples, *, delimiter: str | None = None) -> None:
    """Write samples as a text table with a header line.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; ``.csv`` is comma-separated, other suffixes tab-separated.
    samples : Samples
        Parameters, then every per-sample field that is set (weights as
        ``log_weights``); the evidence goes into leading comment lines, which
        :func:`read_table` reads back.
    delimiter : str or None
        Override the separator.
    """
    path = os.fspath(path)
    if delimiter is None:
        delimiter = "," if path.lower().endswith(".csv") else "\t"
    data = samples.to_numpy()
    # read_table takes these columns (and comment lines) for fields.
    _refuse_clash(samples.parameters, _FIELDS + _SCALARS, path)
    unreadable = _unreadable_names(samples.parameters, delimiter)
    if unreadable:
        other = "," if delimiter.isspace() else "\t"
        # Another separator helps only if it reads every one of these names.
        advice = ("" if _unreadable_names(unreadable, other) else
                  "a .csv file (comma-separated), " if other == "," else
                  "a .tsv file (tab-separated), ")
        raise ValidationError(
            f"parameter names {unreadable} cannot be written to a {delimiter!r}-"
            "separated header and read back (they hold the separator, quotes, a "
            "leading '#' or white space at an end, or read as a number); use "
            f"{advice}.npz or .h5, or rename them")
    names = list(samples.parameters) + [k for k in _FIELDS if k in data]
    table = np.column_stack([data["x"]] + [data[k] for k in _FIELDS if k in data])
    comments = [f"# {k} = {float(data[k])!r}" for k in _SCALARS if k in data]
    # Enough digits to read every value back exactly.
    fmt = "%.17g" if table.dtype == np.float64 else "%.9g"
    with open(path, "w", encoding="utf-8") as fh:
        for line in comments:
            fh.write(line + "\n")
        fh.write(delimiter.join(names) + "\n")
        np.savetxt(fh, table, delimiter=delimiter, fmt=fmt)


def _refuse_clash(parameters, columns, where: str) -> None:
    """A table can hold a parameter or a field of one name, not both."""
    clash = sorted(set(parameters) & set(columns))
    if clash:
        raise ValidationError(
            f"parameters {clash} are named like fields that {where} stores as "
            "columns of their own; one column would be lost or read back as the "
            "other. Rename the parameters (samples.replace(parameters=...))")


# ---------------------------------------------------------------- arrays


def _from_ndarray(arr: np.ndarray, parameters, where: str) -> Samples:
    if arr.dtype.names:
        columns = {n: _column(arr[n], n, where) for n in arr.dtype.names}
        return _from_columns(columns, parameters, where)
    if arr.dtype.kind not in "biuf":
        raise ValidationError(f"{where} has dtype {arr.dtype}; expected numbers")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValidationError(
            f"{where} has shape {arr.shape}; expected (n_samples, n_dims)")
    return Samples.from_array(arr, parameters)


def _from_mapping(data: Mapping, parameters, where: str) -> Samples:
    if "x" in data:
        names = parameters
        fields = {k: np.asarray(data[k]) for k in _FIELDS + _SCALARS if k in data}
        for k in _SCALARS:
            if k in fields and fields[k].size != 1:
                raise ValidationError(
                    f"{k} of {where} must be one number; got shape {fields[k].shape}")
        if "parameters" in data:
            stored = [str(p) for p in np.asarray(data["parameters"]).tolist()]
            samples = Samples.from_array(np.asarray(data["x"]), stored, **fields)
            if parameters is None:
                return samples
            return _select(samples, parameters, where)
        return Samples.from_array(np.asarray(data["x"]), names, **fields)
    columns = {}
    for k, v in data.items():
        if k in _SCALARS:
            continue
        v = np.asarray(v)
        if v.ndim > 1 and v.dtype.kind in "biuf":
            # An array per sample: one column per element, as vector
            # variables of other tools are flattened.
            flat = v.reshape(v.shape[0], -1)
            for i, col in enumerate(flat_parameter_names(str(k), v.shape[1:])):
                _add_column(columns, col, flat[:, i], where)
        else:
            _add_column(columns, str(k), v, where)
    scalars = {}
    for k in _SCALARS:
        if k in data:
            v = np.asarray(data[k])
            if v.size != 1 or v.dtype.kind not in "biuf":
                raise ValidationError(
                    f"{k} of {where} must be one number; got {v.dtype} of shape "
                    f"{v.shape}")
            scalars[k] = float(v.reshape(()))
    return _from_columns(columns, parameters, where, scalars=scalars)


def _check_numpy_magic(path: str) -> None:
    """Refuse a file that is neither ``.npy`` nor a zip archive by its first
    bytes, before numpy would take it for a pickle."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise ValidationError(f"cannot read {path!r}: {exc}") from exc
    if head.startswith((b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")):
        return
    if head[:1] == b"\x80":
        raise ValidationError(
            f"{path!r} is a Python pickle, which aspire_jax does not unpickle; "
            "save plain numeric arrays with numpy.save or numpy.savez instead")
    what = "empty" if not head else "neither a .npy file nor an .npz archive"
    raise ValidationError(
        f"{path!r} is {what} (by its first bytes); write it with numpy.save or "
        "numpy.savez, or give a suffix that names its format (.csv, .txt, .h5, ...)")


def read_array(path, *, parameters=None, format: str | None = None) -> Samples:
    """Read a ``.npy`` or ``.npz`` file (never unpickling).

    Parameters
    ----------
    path : str or os.PathLike
        ``.npy``: a 2-D array ``(n_samples, n_dims)`` or a structured array
        with one named field per column. ``.npz``: either the arrays of
        :meth:`Samples.to_numpy` (``x``, ``parameters``, fields) or one 1-D
        array per column.
    parameters : Sequence[str] or None
        Names of the columns of a plain 2-D array (default ``x_0, x_1, ...``),
        or the named columns to keep.
    format : str or None
        ``"npy"`` or ``"npz"``; by default from the suffix.

    Returns
    -------
    Samples

    Raises
    ------
    ValidationError
        If the file holds object arrays (which would need unpickling) or has
        the wrong shape.
    """
    path = _check_path(path)
    format = format or _suffix(path)[1:]
    _check_numpy_magic(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValidationError(
                f"{path!r} holds Python objects, which aspire_jax does not unpickle; "
                "save plain numeric (or structured) arrays instead"
            ) from exc
        raise ValidationError(f"{path!r} is not a readable .npy/.npz file: {exc}"
                              ) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValidationError(
            f"{path!r} is not a readable .npy/.npz file (truncated or another "
            f"format): {exc}") from exc
    if format == "npy":
        if not isinstance(loaded, np.ndarray):
            loaded.close()
            raise ValidationError(f"{path!r} is an .npz archive; use format='npz'")
        return _from_ndarray(loaded, parameters, repr(path))
    if isinstance(loaded, np.ndarray):
        return _from_ndarray(loaded, parameters, repr(path))
    with loaded as z:
        try:
            data = {k: z[k] for k in z.files}
        except ValueError as exc:
            raise ValidationError(
                f"{path!r} holds Python objects, which aspire_jax does not "
                "unpickle; save plain numeric arrays instead") from exc
    plain = [k for k in data if k not in _FIELDS + _SCALARS + ("parameters",)]
    if len(plain) == 1 and data[plain[0]].ndim == 2 and "x" not in data:
        fields = {k: data[k] for k in _FIELDS + _SCALARS if k in data}
        return Samples.from_array(data[plain[0]], parameters, **fields)
    return _from_mapping(data, parameters, repr(path))


# ---------------------------------------------------------------- HDF5


def _samples_group(f):
    import h5py

    if f.attrs.get("aspire_jax_type") == "Samples":
        return "."
    if isinstance(f.get("samples"), h5py.Group) and "x" in f["samples"]:
        return "samples"
    marked = [name for name, obj in f.items() if isinstance(obj, h5py.Group)
              and obj.attrs.get("aspire_jax_type") == "Samples"]
    if len(marked) > 1:
        raise ValidationError(
            f"{f.filename!r} holds several groups of samples {marked}; pass "
            "group= to choose one")
    return marked[0] if marked else None


def read_hdf5(path, *, group: str | None = None, parameters=None) -> Samples:
    """Read samples written by :meth:`Samples.save`, or a bilby HDF5 result.

    Parameters
    ----------
    path : str or os.PathLike
        An ``.h5`` / ``.hdf5`` file.
    group : str or None
        The group holding the samples; default: the file root if it holds
        samples, else ``samples``, else the only group marked as samples.
    parameters : Sequence[str] or None
        Parameters to keep.

    Returns
    -------
    Samples

    Raises
    ------
    ValidationError
        If no samples are found.
    CheckpointError
        If the file is truncated, corrupt or claims a newer format.
    """
    path = _check_path(path)
    if group is None:
        with AspireFile(path, "r") as f:
            group = _samples_group(f)
            bilby = "posterior" in f
            checkpoint = "checkpoint" in f
        if group is None:
            if bilby:
                return read_bilby_result(path, parameters=parameters,
                                         format="bilby_hdf5")
            raise ValidationError(
                f"{path!r} holds no samples: no group written by Samples.save and "
                "no bilby /posterior; pass group= to name the group"
                + (". It holds a run's checkpoint: Aspire.resume_from_file(path, "
                   "log_likelihood=..., log_prior=...).sample_posterior() returns "
                   "its posterior (a finished run is not run again)"
                   if checkpoint else ""))
    _check_names_list(parameters)
    samples = Samples.load(path, group)
    return samples if parameters is None else _select(samples, parameters, repr(path))


# ---------------------------------------------------------------- ArviZ


def _import_arviz():
    try:
        with warnings.catch_warnings():
            # ArviZ announces an API refactor with a FutureWarning at import.
            warnings.simplefilter("ignore", FutureWarning)
            import arviz
    except ImportError as exc:
        raise ImportError(
            'ArviZ support needs arviz: pip install "aspire-jax[arviz]"') from exc
    return arviz


def _dataset(idata, name: str):
    """The xarray Dataset of group ``name`` (InferenceData or DataTree), or None."""
    try:
        node = idata[name] if name in _group_names_of(idata) else None
    except (KeyError, TypeError):
        node = None
    if node is None:
        return None
    return node.to_dataset() if type(node).__name__ == "DataTree" else node


def _group_names_of(idata) -> list[str]:
    if hasattr(idata, "groups") and callable(idata.groups):
        return list(idata.groups())
    return list(getattr(idata, "children", {}))


def _sample_dims(var) -> tuple[str, ...]:
    dims = tuple(d for d in var.dims if d in ("chain", "draw"))
    if var.dims[: len(dims)] != dims or not dims:
        raise ValidationError(
            f"variable {var.name!r} has dims {var.dims}; expected leading "
            "('chain', 'draw')")
    return dims


def _flatten_var(var) -> tuple[np.ndarray, tuple]:
    dims = _sample_dims(var)
    values = np.asarray(var.values)
    n = int(np.prod(values.shape[: len(dims)]))
    return values.reshape((n,) + values.shape[len(dims):]), values.shape[len(dims):]


def _summed(ds) -> np.ndarray | None:
    """Sum of every variable of a group over its non-sample dims, per draw."""
    if ds is None or not ds.data_vars:
        return None
    total = 0.0
    for var in ds.data_vars.values():
        flat, _ = _flatten_var(var)
        total = total + flat.reshape(flat.shape[0], -1).sum(axis=1)
    return np.asarray(total)


def from_arviz(idata, *, parameters=None, group: str = "posterior") -> Samples:
    """Samples from an ArviZ ``InferenceData`` (or ``xarray.DataTree``).

    Parameters
    ----------
    idata : arviz.InferenceData
        With a ``posterior`` group of variables dimensioned
        ``(chain, draw, ...)``; chains and draws are flattened into one sample
        axis (chain-major), vector variables into ``name[i,...]`` columns.
    parameters : Sequence[str] or None
        Flattened columns to keep; default: every numeric one.
    group : str
        Group to read the parameters from.

    Returns
    -------
    Samples
        ``log_likelihood`` is the sum over observations of the
        ``log_likelihood`` group, if present (else
        ``sample_stats.log_likelihood``); ``log_prior`` comes from a
        ``log_prior`` group or ``sample_stats.log_prior``; the evidence from
        the group's ``log_evidence`` / ``log_evidence_error`` attributes.

    Raises
    ------
    ValidationError
        If the group is missing or a variable lacks the sample dims.
    """
    ds = _dataset(idata, group)
    if ds is None:
        raise ValidationError(
            f"the InferenceData has no {group!r} group; its groups are "
            f"{_group_names_of(idata)}")
    columns = {}
    for name, var in ds.data_vars.items():
        flat, shape = _flatten_var(var)
        if flat.dtype.kind not in "biuf":
            continue
        flat = flat.reshape(flat.shape[0], -1)
        for i, col in enumerate(flat_parameter_names(str(name), shape)):
            _add_column(columns, col, flat[:, i], "the InferenceData")
    stats = _dataset(idata, "sample_stats")
    for field in ("log_likelihood", "log_prior"):
        value = _summed(_dataset(idata, field))
        if value is None and stats is not None and field in stats.data_vars:
            value = _flatten_var(stats[field])[0]
        if value is not None:
            # In the precision it was stored in, as every reader keeps it.
            columns[field] = _column(np.asarray(value).reshape(-1), field,
                                     "the InferenceData")
    scalars = {k: _finite_or_none(ds.attrs.get(k)) for k in _SCALARS}
    return _from_columns(columns, parameters, "the InferenceData", scalars=scalars)


def read_netcdf(path, *, parameters=None, group: str = "posterior") -> Samples:
    """Read an ArviZ NetCDF file (``InferenceData.to_netcdf``); see
    :func:`from_arviz`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.nc`` file.
    parameters : Sequence[str] or None
        Flattened columns to keep.
    group : str
        Group to read the parameters from.

    Returns
    -------
    Samples
    """
    az = _import_arviz()
    path = _check_path(path)
    try:
        idata = az.from_netcdf(path)
    except (OSError, ValueError) as exc:
        raise ValidationError(
            f"{str(path)!r} is not a readable NetCDF file (empty, truncated or "
            f"another format): {exc}") from exc
    return from_arviz(idata, parameters=parameters, group=group)


def to_arviz(samples: Samples, *, key=None):
    """An ArviZ ``InferenceData`` holding the samples as one chain.

    Parameters
    ----------
    samples : Samples
        Weighted samples are first resampled to equal weights (ArviZ treats
        every draw as equally weighted), which needs ``key``.
    key : jax.Array or int or None
        Typed key or int seed for that resampling.

    Returns
    -------
    arviz.InferenceData
        ``posterior`` with dims ``(chain=1, draw=n)``; columns named
        ``v[i,...]`` that fill a grid are regrouped into one array variable
        ``v``. ``sample_stats`` holds ``log_likelihood``, ``log_prior`` and
        their sum ``lp`` where known; the evidence is stored in the posterior's
        attributes.

    Raises
    ------
    ValidationError
        If the samples are weighted and no key is given, or a parameter is
        named ``chain``, ``draw`` or like an evidence attribute.
    ImportError
        If arviz is not installed.
    """
    # The sample dimensions, and the evidence kept in the attributes.
    _refuse_clash(samples.parameters, ("chain", "draw") + _SCALARS,
                  "an ArviZ InferenceData")
    az = _import_arviz()
    import xarray as xr

    samples = _equal_weights(samples, key, "the samples")
    x = np.asarray(samples.x)
    n = x.shape[0]
    coords = {"chain": [0], "draw": np.arange(n)}
    variables = {}
    for name, shape, cols in _group_names(list(samples.parameters)):
        values = x[:, cols].reshape((1, n) + shape)
        dims = ("chain", "draw") + tuple(f"{name}_dim_{k}" for k in range(len(shape)))
        variables[name] = (dims, values)
    attrs = {k: float(getattr(samples, k)) for k in _SCALARS
             if getattr(samples, k) is not None}
    groups = {"posterior": xr.Dataset(variables, coords=coords, attrs=attrs)}
    stats = {k: (("chain", "draw"), np.asarray(getattr(samples, k))[None])
             for k in ("log_likelihood", "log_prior")
             if getattr(samples, k) is not None}
    if len(stats) == 2:
        stats["lp"] = (("chain", "draw"),
                       stats["log_likelihood"][1] + stats["log_prior"][1])
    if stats:
        groups["sample_stats"] = xr.Dataset(stats, coords=coords)
    if hasattr(az, "InferenceData"):
        return az.InferenceData(**groups)
    return xr.DataTree.from_dict(groups)


# ---------------------------------------------------------------- pandas


def from_dataframe(frame, *, parameters=None) -> Samples:
    """Samples from a ``pandas.DataFrame`` of columns.

    Parameters
    ----------
    frame : pandas.DataFrame
        One column per parameter; ``log_likelihood``, ``log_prior``, ``log_q``
        and ``log_weights`` columns fill those fields, and
        ``frame.attrs["log_evidence"]`` / ``["log_evidence_error"]`` the
        evidence (as :meth:`Samples.to_dataframe` writes them).
    parameters : Sequence[str] or None
        Columns to keep as parameters; default: every other numeric column.

    Returns
    -------
    Samples
    """
    names = [str(c) for c in frame.columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValidationError(
            f"the DataFrame names the columns {twice} more than once; one of each "
            "would be lost. Rename them")
    columns = {name: _column(frame.iloc[:, i].to_numpy(), name, "the DataFrame")
               for i, name in enumerate(names)}
    scalars = {k: _finite_or_none(frame.attrs.get(k)) for k in _SCALARS}
    return _from_columns(columns, parameters, "the DataFrame", scalars=scalars)


def to_dataframe(samples: Samples):
    """``samples.to_dataframe()``: see :meth:`Samples.to_dataframe`.

    Parameters
    ----------
    samples : Samples
        The samples.

    Returns
    -------
    pandas.DataFrame
    """
    return samples.to_dataframe()
