#!/usr/bin/python3
"""Convert an mmnet HDF5 weight file back to a PyTorch state_dict.

    h52torch.py IN.h5 OUT.pt

IN.h5 is a file written by mmnet::save / mmnet::io::save_state_dict or tools/torch2h5.py (or any HDF5 file
with numeric datasets at the root). OUT.pt receives an OrderedDict in the file's dataset order with each
dataset's shape and dtype (0-d int64 counters such as num_batches_tracked stay 0-d int64), so that
`model.load_state_dict(torch.load("OUT.pt"), strict=True)` works. OUT.pt is written to a temporary file and
renamed. Exit status 1 on any error (missing, non-HDF5, truncated or corrupt file, a non-numeric dataset,
nested groups), with a message saying what is wrong.

Run with Debian's /usr/bin/python3 (torch, h5py, numpy).
"""
import argparse
import collections
import os
import sys
import tempfile

FORMAT_VERSION = 1  # newest mmnet format this reader understands
PROG = "h52torch.py"


class ConversionError(Exception):
    """A problem with the input or output, reported as one line without a traceback."""


def _attr_text(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace").rstrip("\0")
    if hasattr(v, "tobytes") and getattr(v, "dtype", None) is not None and v.dtype.kind == "S":
        return v.tobytes().decode("utf-8", "replace").rstrip("\0")
    return str(v)


def read_h5(path):
    """OrderedDict name -> numpy array, in the file's creation order (name order if it is not tracked)."""
    import h5py
    import numpy as np

    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ConversionError(f"{path}: is a directory, not an HDF5 file")
    if os.path.getsize(path) == 0:
        raise ConversionError(f"{path}: not an HDF5 file (the file is empty)")
    try:
        is_h5 = h5py.is_hdf5(path)
    except Exception:  # noqa: BLE001
        is_h5 = False
    if not is_h5:
        raise ConversionError(f"{path}: not an HDF5 file (no HDF5 signature: another format, or cut off "
                              "before the superblock)")
    out = collections.OrderedDict()
    try:
        f = h5py.File(path, "r")
    except Exception as e:  # noqa: BLE001 - h5py raises OSError, sometimes others, for damaged files
        raise ConversionError(f"{path}: the HDF5 file is truncated or corrupt: it cannot be opened ({e})") from None
    with f:
        try:
            version = f.attrs.get("mmnet_format_version")
        except Exception as e:  # noqa: BLE001
            raise ConversionError(f"{path}: cannot read the root attributes; corrupt file? ({e})") from None
        if version is not None:
            text = _attr_text(version)
            if not text.isdigit() or not 1 <= int(text) <= FORMAT_VERSION:
                raise ConversionError(f"{path}: mmnet_format_version is '{text}'; this reader understands format "
                                      f"1 to {FORMAT_VERSION} (file from a newer mmnet?)")
        try:
            names = _names_in_order(h5py, f)
        except Exception as e:  # noqa: BLE001
            raise ConversionError(f"{path}: cannot list the datasets; corrupt file? ({e})") from None
        for name in names:
            try:
                obj = f.get(name, getlink=True)
                if not isinstance(obj, h5py.HardLink):
                    raise ConversionError(f"{path}: '{name}' is a {type(obj).__name__}, not a dataset")
                obj = f[name]
            except ConversionError:
                raise
            except Exception as e:  # noqa: BLE001
                raise ConversionError(f"{path}: cannot open '{name}'; corrupt file? ({e})") from None
            if isinstance(obj, h5py.Group):
                raise ConversionError(f"{path}: '{name}' is a group; an mmnet weight file holds only datasets at "
                                      "the root")
            dt = obj.dtype
            if dt.kind not in "fiu" or dt.names is not None or h5py.check_string_dtype(dt) is not None \
                    or h5py.check_enum_dtype(dt) is not None:
                raise ConversionError(f"{path}: dataset '{name}' holds {dt} data; a state_dict holds float32, "
                                      "float64 or int64 numbers")
            if obj.shape is None:
                raise ConversionError(f"{path}: dataset '{name}' has no data (null dataspace)")
            layout = obj.id.get_create_plist().get_layout()
            if layout in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT) and obj.size and \
                    obj.id.get_storage_size() != obj.size * dt.itemsize:
                raise ConversionError(f"{path}: dataset '{name}' stores {obj.id.get_storage_size()} bytes for "
                                      f"{obj.size} values of {dt.itemsize} bytes (never written, truncated or "
                                      "corrupt)")
            try:
                a = obj[()]
            except Exception as e:  # noqa: BLE001 - checksum mismatch, truncated data
                raise ConversionError(f"{path}: cannot read dataset '{name}': corrupt or truncated data ({e})") \
                    from None
            a = np.asarray(a)
            if a.dtype.kind == "f":
                a = a.astype(np.float32 if a.dtype.itemsize <= 4 else np.float64)
            else:
                if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
                    raise ConversionError(f"{path}: dataset '{name}' holds values beyond int64")
                a = a.astype(np.int64)
            out[name] = np.require(a, a.dtype.newbyteorder("="), "C")  # (ascontiguousarray would make 0-d 1-d)
    if not out:
        raise ConversionError(f"{path}: the file holds no datasets")
    return out


def _names_in_order(h5py, f):
    """Root link names in creation order when the file tracks it (mmnet files do), else by name.

    Creation order is simply tried: HDF5 1.10 does not report the root group's tracking in its property list,
    and h5py's own iteration then falls back to name order."""
    names = []
    try:
        f.id.links.iterate(lambda n: names.append(n.decode("utf-8")), idx_type=h5py.h5.INDEX_CRT_ORDER)
    except Exception:  # noqa: BLE001 - creation order not tracked: name order
        names = []
        f.id.links.iterate(lambda n: names.append(n.decode("utf-8")), idx_type=h5py.h5.INDEX_NAME)
    return names


def write_pt(sd, out_path):
    import torch

    directory = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(directory):
        raise ConversionError(f"{out_path}: the directory {directory} does not exist")
    if os.path.isdir(out_path):
        raise ConversionError(f"{out_path}: is a directory")
    tensors = collections.OrderedDict((k, torch.from_numpy(a)) for k, a in sd.items())
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out_path) + ".tmp-", dir=directory)
    os.close(fd)
    try:
        torch.save(tensors, tmp)
        with open(tmp, "rb") as fh:
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
    p = _Parser(prog=PROG, description="Convert an mmnet HDF5 weight file to a PyTorch state_dict (an "
                "OrderedDict in file order) for model.load_state_dict(torch.load(OUT.pt), strict=True).")
    p.add_argument("input", metavar="IN.h5", help="mmnet HDF5 weight file")
    p.add_argument("output", metavar="OUT.pt", help="PyTorch file to write (atomically) with torch.save")
    args = p.parse_args(argv)
    try:
        sd = read_h5(args.input)
        write_pt(sd, args.output)
    except ConversionError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{PROG}: error: {args.output}: cannot write ({e})", file=sys.stderr)
        return 1
    print(f"{PROG}: wrote {len(sd)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
