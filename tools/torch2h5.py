#!/usr/bin/python3
"""Convert PyTorch weights (.pt / .pth) to an mmnet HDF5 weight file.

    torch2h5.py IN.pt OUT.h5 [--model-name NAME]

IN.pt may hold a state_dict, a checkpoint dict with a 'state_dict', 'model' or 'model_state_dict' entry (a
state_dict or an nn.Module), or a whole pickled nn.Module. OUT.h5 gets the layout mmnet's C++ writer
(include/mmnet/io/hdf5.hpp) uses: one dataset per state_dict entry at the root, named by its dotted key, in
state_dict order (creation order tracked), with PyTorch's shape and dtype (float32, float64, int64; 0-d for
num_batches_tracked), and the root attributes mmnet_format_version, mmnet_library_version and model_name.
Metadata is checksummed (HDF5 1.10 object format) and arrays carry Fletcher-32 checksums, so corruption is
detected on load. float16 / bfloat16 tensors are written as float32, other integer and bool tensors as int64,
each with a warning. The output is written to a temporary file and renamed, so OUT.h5 is either the old file
or the complete new one. Exit status 1 on any error, with a message saying what is wrong.

Run with Debian's /usr/bin/python3 (torch, h5py, numpy).
"""
import argparse
import collections
import collections.abc
import io
import os
import sys
import tempfile

FORMAT_VERSION = 1
LIBRARY_VERSION = "0.1.0"  # MMNET_VERSION_STRING of the C++ library this writer matches
MAX_CHUNK_BYTES = 1 << 28  # as detail::max_chunk_bytes() in hdf5.hpp
CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict")

PROG = "torch2h5.py"


class ConversionError(Exception):
    """A problem with the input or output, reported as one line without a traceback."""


def warn(msg):
    print(f"{PROG}: warning: {msg}", file=sys.stderr)


def load_torch(path):
    import torch

    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ConversionError(f"{path}: is a directory, not a PyTorch file")
    # Tensors-only unpickling first (it runs no code); a pickled nn.Module needs full unpickling.
    first_error = None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # a torch without weights_only
        pass
    except Exception as e:  # noqa: BLE001 - retried below, reported if that fails too
        first_error = e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False) if first_error is not None else \
            torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad input file
        raise ConversionError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {e})") from None
    if first_error is not None:
        warn(f"{path} holds pickled Python objects beyond tensors; it was loaded with full unpickling "
             "(only convert files you trust)")
    return obj


def find_state_dict(obj, path):
    """The state_dict inside what torch.load returned."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, collections.abc.Mapping):
        for key in CHECKPOINT_KEYS:
            if key in obj:
                inner = obj[key]
                if isinstance(inner, torch.nn.Module):
                    return inner.state_dict()
                if isinstance(inner, collections.abc.Mapping):
                    return inner
                raise ConversionError(f"{path}: checkpoint entry '{key}' is a {type(inner).__name__}, "
                                      "not a state_dict or an nn.Module")
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        bad = next(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
        raise ConversionError(f"{path}: a dict that is neither a state_dict (entry '{bad}' is a "
                              f"{type(obj[bad]).__name__}, not a tensor) nor a checkpoint with one of the "
                              f"entries {', '.join(CHECKPOINT_KEYS)}")
    raise ConversionError(f"{path}: holds a {type(obj).__name__}; expected a state_dict, a checkpoint dict or "
                          "an nn.Module")


def to_arrays(sd, path):
    """(key, numpy array) pairs in state_dict order, with mmnet's dtypes."""
    import numpy as np
    import torch

    out = []
    for key, t in sd.items():
        if not isinstance(key, str) or not key or key == "." or "/" in key:
            raise ConversionError(f"{path}: key {key!r} cannot be a dataset name (empty, '.' or containing '/')")
        if not isinstance(t, torch.Tensor):
            raise ConversionError(f"{path}: entry '{key}' is a {type(t).__name__}, not a tensor")
        if t.is_sparse or t.is_quantized or t.is_complex() or t.device.type == "meta":
            raise ConversionError(f"{path}: entry '{key}' is a {t.dtype} tensor on {t.device} "
                                  f"({t.layout}); mmnet stores dense real tensors only")
        t = t.detach().cpu().contiguous()
        if t.dtype in (torch.float32, torch.float64, torch.int64):
            a = t.numpy()
        elif t.is_floating_point():
            warn(f"entry '{key}': {t.dtype} stored as float32")
            a = t.to(torch.float32).numpy()
        else:
            warn(f"entry '{key}': {t.dtype} stored as int64")
            a = t.to(torch.int64).numpy()
        out.append((key, np.require(a, a.dtype.newbyteorder("<"), "C")))  # (ascontiguousarray would make 0-d 1-d)
    return out


def chunk_shape(shape, itemsize):
    """Chunks as hdf5.hpp's detail::chunk_dims: the whole array up to MAX_CHUNK_BYTES, else split leading axes."""
    c = list(shape)
    limit = max(MAX_CHUNK_BYTES, itemsize)
    for i in range(len(c)):
        inner = itemsize
        for d in c[i + 1:]:
            inner *= d
        if inner * c[i] <= limit:
            break
        c[i] = max(1, limit // inner)
    return tuple(c)


def write_string_attr(h5py, obj, name, value):
    """Fixed-length, NUL-terminated UTF-8 string, as the C++ writer makes it."""
    import numpy as np

    data = value.encode("utf-8")
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(len(data) + 1)
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    tid.set_cset(h5py.h5t.CSET_UTF8)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    attr = h5py.h5a.create(obj.id, name.encode("utf-8"), tid, space)
    attr.write(np.array(data + b"\0", dtype=f"S{len(data) + 1}"), mtype=tid)


def build_image(arrays, model_name):
    """The HDF5 file's bytes, built in memory (HDF5 never writes to disk itself: a write failing inside HDF5,
    e.g. on a full disk, leaves the file open in the library, which can crash the interpreter at exit)."""
    import h5py

    image = io.BytesIO()
    # The C++ writer's file properties: HDF5 1.10 format (checksummed metadata), creation order tracked and
    # indexed (track_order=True), no timestamps (the same weights give the same bytes).
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fileobj_driver(h5py.h5fd.fileobj_driver, image)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    order = h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED
    fcpl.set_link_creation_order(order)
    fcpl.set_attr_creation_order(order)
    fcpl.set_obj_track_times(False)
    name = f"torch2h5-in-memory-{os.getpid()}-{id(image)}.h5".encode()
    with h5py.File(h5py.h5f.create(name, h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl)) as f:
        for attr, value in (("mmnet_format_version", str(FORMAT_VERSION)), ("mmnet_library_version", LIBRARY_VERSION),
                            ("model_name", model_name)):
            write_string_attr(h5py, f, attr, value)
        for key, a in arrays:
            if a.ndim > 0 and a.size > 0:
                f.create_dataset(key, data=a, chunks=chunk_shape(a.shape, a.itemsize), fletcher32=True,
                                 track_times=False)
            else:
                # 0-d and empty arrays: compact layout, inside the checksummed object header. (h5py's
                # create_dataset ignores a dcpl for scalars, hence the low-level calls.)
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_layout(h5py.h5d.COMPACT)
                dcpl.set_obj_track_times(False)
                space = h5py.h5s.create(h5py.h5s.SCALAR) if a.ndim == 0 else h5py.h5s.create_simple(a.shape)
                ds = h5py.h5d.create(f.id, key.encode("utf-8"), h5py.h5t.py_create(a.dtype), space, dcpl=dcpl)
                if a.size:
                    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, a)
    return image.getvalue()


def write_atomically(data, out_path):
    """data to a temporary file next to out_path, fsynced, then renamed over it; on failure nothing changes."""
    directory = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(directory):
        raise ConversionError(f"{out_path}: the directory {directory} does not exist")
    if os.path.isdir(out_path):
        raise ConversionError(f"{out_path}: is a directory")
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out_path) + ".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        m = os.umask(0)
        os.umask(m)
        os.chmod(tmp, 0o666 & ~m)  # as a plain open() would create it
        os.replace(tmp, out_path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 1 like every other error
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(1)


def main(argv=None):
    p = _Parser(prog=PROG, description="Convert PyTorch weights (a state_dict, a checkpoint dict with "
                "'state_dict' / 'model' / 'model_state_dict', or a whole nn.Module) to an mmnet HDF5 file.")
    p.add_argument("input", metavar="IN.pt", help="PyTorch file written by torch.save")
    p.add_argument("output", metavar="OUT.h5", help="mmnet HDF5 weight file to write (atomically)")
    p.add_argument("--model-name", default="", metavar="NAME", help="stored as the root attribute model_name")
    args = p.parse_args(argv)
    try:
        obj = load_torch(args.input)
        sd = find_state_dict(obj, args.input)
        arrays = to_arrays(sd, args.input)
        if not arrays:
            raise ConversionError(f"{args.input}: the state_dict is empty")
        write_atomically(build_image(arrays, args.model_name), args.output)
    except ConversionError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{PROG}: error: {args.output}: cannot write ({e})", file=sys.stderr)
        return 1
    print(f"{PROG}: wrote {len(arrays)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
