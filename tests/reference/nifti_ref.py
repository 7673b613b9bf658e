"""NIfTI-1/2 files written by nibabel, and a checker for the files mmnet writes (tests/io/nifti_test.cpp).

generate(outdir): writes <outdir>/nifti/<case>.nii[.gz] with nibabel and <outdir>/nifti.h5 holding, per case, what
nibabel reads back from each file: "<case>/data" (get_fdata(), nibabel's (x, y, z, t) order), "<case>/affine",
"<case>/dims", "<case>/pixdim" (all 8), "<case>/fields" (the numbers in FIELDS order) and the strings "<case>/file",
"<case>/descrip", "<case>/intent_name", "<case>/aux_file" as int64 byte codes. Scale factors and a few header
fields are patched into the header bytes after nibabel serialised the image, because nibabel's writer chooses its
own scl_slope / scl_inter.

    /usr/bin/python3 nifti_ref.py check DIR

reads DIR/manifest.h5 (written by the C++ test through mmnet::io::save_state_dict) whose groups have the same
layout except that the data is "<case>/data_zyx", mmnet's C-order (..., z, y, x) view, and checks that nibabel
reads each DIR/<file> with exactly that data (transposed), header fields, datatype and affine. Exit status 1 on
any difference, with one line per difference.
"""
import gzip
import io
import os
import sys

import h5py
import nibabel as nib
import numpy as np

# Numeric header fields compared exactly (as float64 of the stored value) in both directions.
FIELDS = ["version", "datatype", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x",
          "qoffset_y", "qoffset_z", "srow_x0", "srow_x1", "srow_x2", "srow_x3", "srow_y0", "srow_y1", "srow_y2",
          "srow_y3", "srow_z0", "srow_z1", "srow_z2", "srow_z3", "scl_slope", "scl_inter", "xyzt_units",
          "intent_code", "intent_p1", "intent_p2", "intent_p3", "cal_min", "cal_max", "slice_code", "slice_start",
          "slice_end", "slice_duration", "toffset", "dim_info", "qfac"]
STRINGS = ["descrip", "intent_name", "aux_file"]


def raw_header(img, path):
    """The header as stored: a loaded image's own header has scl_slope / scl_inter reset (its data proxy scales)."""
    with nib.openers.ImageOpener(path) as f:
        return type(img.header).from_fileobj(f, check=False)


def header_fields(h):
    version = 2 if isinstance(h, nib.Nifti2Header) else 1
    v = {"version": version, "datatype": int(h["datatype"]), "qfac": -1.0 if h["pixdim"][0] < 0 else 1.0}
    for k in FIELDS:
        if k in v:
            continue
        if k.startswith("srow_"):
            v[k] = float(h[k[:-1]][int(k[-1])])
        else:
            v[k] = float(h[k])
    return np.array([v[k] for k in FIELDS], dtype=np.float64)


def header_strings(h):
    return {k: bytes(h[k].item()).split(b"\0")[0] for k in STRINGS}


def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def affine(zooms, angles, offset, shear=0.0, flip_z=False):
    m = rotation(*angles) @ np.diag(zooms)
    if flip_z:
        m[:, 2] *= -1
    m[0, 1] += shear
    a = np.eye(4)
    a[:3, :3] = m
    a[:3, 3] = offset
    return a


DTYPES = {"u8": np.uint8, "i16": np.int16, "i32": np.int32, "f32": np.float32, "f64": np.float64}


def make_data(shape, dtype, rng):
    if np.dtype(dtype).kind == "f":
        d = rng.standard_normal(shape) * 100
        if dtype == np.float32:
            d = d.astype(np.float32)
        d.flat[0] = 0.0
        return d.astype(dtype)
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -(2**31) + 1), min(info.max, 2**31 - 1)
    d = rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    d.flat[0], d.flat[-1] = info.min if info.min > -(2**31) else d.flat[0], info.max if info.max < 2**31 else d.flat[-1]
    return d


def serialise(img, patch):
    b = img.to_bytes()
    if patch:
        hcls = type(img.header)
        hdr = hcls.from_fileobj(io.BytesIO(b), check=False)
        for k, v in patch.items():
            hdr[k] = v
        out = io.BytesIO()
        hdr.write_to(out)
        hb = out.getvalue()
        b = hb + b[len(hb):]
    return b


def cases():
    """(name, file, image, header patch) for every nibabel-written file."""
    rng = np.random.default_rng(7)
    out = []
    shape = (7, 5, 3)  # x, y, z all different
    zooms = (0.8, 1.5, 3.0)
    a_s = affine(zooms, (0.3, -0.2, 0.7), (-12.5, 30.25, 7.0), shear=0.1)
    a_q = affine(zooms, (0.1, 0.25, -0.4), (5.0, -6.0, 100.5))
    a_qflip = affine(zooms, (-0.3, 0.1, 0.2), (1.0, 2.0, 3.0), flip_z=True)
    for version, cls in ((1, nib.Nifti1Image), (2, nib.Nifti2Image)):
        for i, (dn, dt) in enumerate(DTYPES.items()):
            ext = ".nii.gz" if (i + version) % 2 else ".nii"
            data = make_data(shape if dn != "f64" else shape + (2,), dt, rng)  # float64: 4D, two volumes
            img = cls(data, None)
            img.set_data_dtype(dt)
            h = img.header
            h.set_zooms(zooms + ((2.5,) if data.ndim == 4 else ()))
            patch = {}
            if dn in ("u8", "f64"):  # sform and qform both set, different (sform wins)
                img.set_sform(a_s, code=2)
                img.set_qform(a_q, code=1)
            elif dn == "i16":  # qform only, qfac -1
                img.set_qform(a_qflip, code=1)
                img.set_sform(np.eye(4), code=0)
                patch = {"scl_slope": 0.5, "scl_inter": -3.0}  # int16 scaled on read
            elif dn == "i32":  # qform only
                img.set_qform(a_q, code=4)
                img.set_sform(None, code=0)
                patch = {"scl_slope": 0.0, "scl_inter": 7.0}  # slope 0: no scaling (inter ignored)
            else:  # f32: no transform codes, nibabel's fallback affine
                img.set_qform(None, code=0)
                img.set_sform(None, code=0)
                patch = {"scl_slope": 2.0, "scl_inter": 0.25}
            h.set_xyzt_units("mm", "sec")
            h["descrip"] = f"mmnet nifti test {dn} v{version}".encode()
            h["aux_file"] = b"aux.txt"
            h["intent_code"] = 1001 if dn == "f64" else 0
            h["intent_p1"] = 1.5
            h["intent_name"] = b"estimate" if dn == "f64" else b""
            h["cal_min"], h["cal_max"] = -10.0, 250.0
            h["dim_info"] = 57  # freq 1, phase 2, slice 3
            h["slice_code"], h["slice_start"], h["slice_end"], h["slice_duration"] = 1, 0, 2, 0.125
            h["toffset"] = 0.75
            out.append((f"v{version}_{dn}", f"v{version}_{dn}{ext}", img, patch))
    # Big-endian int16 with a header extension (data after vox_offset 352 + extension).
    h = nib.Nifti1Header(endianness=">")
    data = make_data((4, 6, 5), np.int16, rng)
    img = nib.Nifti1Image(data, a_s, header=h)
    img.set_data_dtype(np.int16)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment extension from nibabel"))
    out.append(("big_endian_ext", "big_endian_ext.nii", img, {"scl_slope": np.nan, "scl_inter": np.nan}))
    # NaN slope (no scaling), float32 compressed, 4D with three volumes, NIfTI-2.
    data = make_data((3, 4, 2, 3), np.float32, rng)
    img = nib.Nifti2Image(data, a_q)
    img.set_data_dtype(np.float32)
    img.header.set_zooms((0.5, 0.75, 2.0, 1.0))
    out.append(("v2_4d_f32", "v2_4d_f32.nii.gz", img, {"scl_slope": np.nan, "scl_inter": 1.0}))
    return out


def string_codes(s):
    return np.frombuffer(s, dtype=np.uint8).astype(np.int64) if s else np.zeros((0,), np.int64)


def write_h5(path, entries):
    tmp = path + ".tmp"
    with h5py.File(tmp, "w", track_order=True) as f:
        for key, value in entries.items():
            group = f
            for part in key.split("/")[:-1]:
                group = group[part] if part in group else group.create_group(part, track_order=True)
            group.create_dataset(key.split("/")[-1], data=value)
    os.replace(tmp, path)


def generate(outdir):
    ddir = os.path.join(outdir, "nifti")
    os.makedirs(ddir, exist_ok=True)
    entries = {}
    for name, fname, img, patch in cases():
        b = serialise(img, patch)
        if fname.endswith(".gz"):
            b = gzip.compress(b, mtime=0)
        path = os.path.join(ddir, fname)
        with open(path + ".tmp", "wb") as f:
            f.write(b)
        os.replace(path + ".tmp", path)
        back = nib.load(path)  # what nibabel reads is the reference
        entries[f"{name}/file"] = string_codes(fname.encode())
        entries[f"{name}/data"] = np.asarray(back.get_fdata(), dtype=np.float64)
        entries[f"{name}/affine"] = np.asarray(back.affine, dtype=np.float64)
        h = raw_header(back, path)
        entries[f"{name}/dims"] = np.asarray(h["dim"][1 : int(h["dim"][0]) + 1], dtype=np.int64)
        entries[f"{name}/pixdim"] = np.asarray(h["pixdim"], dtype=np.float64)
        entries[f"{name}/fields"] = header_fields(h)
        for k, v in header_strings(h).items():
            entries[f"{name}/{k}"] = string_codes(v)
    # Valid slope with a non-finite intercept: nibabel refuses to scale (HeaderDataError), so must mmnet.
    img = nib.Nifti1Image(np.ones((2, 3, 4), np.int16), np.eye(4))
    img.set_data_dtype(np.int16)
    with open(os.path.join(ddir, "bad_inter.nii"), "wb") as f:
        f.write(serialise(img, {"scl_slope": 2.0, "scl_inter": np.inf}))
    write_h5(os.path.join(outdir, "nifti.h5"), entries)


def decode(a):
    return bytes(np.asarray(a, dtype=np.int64).astype(np.uint8).tolist())


def same(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def check(d):
    failures, checks = [], 0
    with h5py.File(os.path.join(d, "manifest.h5"), "r") as m:
        names = list(m.keys())
        for name in names:
            g = m[name]
            fname = decode(g["file"][()]).decode()
            path = os.path.join(d, fname)

            def expect(cond, what):
                nonlocal checks
                checks += 1
                if not cond:
                    failures.append(f"{name} ({fname}): {what}")

            try:
                img = nib.load(path)
                data = np.asarray(img.get_fdata(), dtype=np.float64)
            except Exception as e:  # noqa: BLE001
                expect(False, f"nibabel cannot read it: {e}")
                continue
            want = np.transpose(g["data_zyx"][()])  # mmnet's (..., z, y, x) -> nibabel's (x, y, z, ...)
            expect(data.shape == want.shape, f"shape {data.shape} != {want.shape}")
            expect(same(data, want), f"data differs (max |diff| {np.nanmax(np.abs(data - want)) if data.shape == want.shape else '-'})")
            raw = raw_header(img, path)
            fields = header_fields(raw)
            wf = g["fields"][()]
            for k, a, b in zip(FIELDS, fields, wf):
                expect(same(a, b), f"{k}: nibabel reads {a!r}, mmnet wrote {b!r}")
            expect(same(raw["dim"][1 : int(raw["dim"][0]) + 1], g["dims"][()]), "dims")
            expect(same(raw["pixdim"][1:], g["pixdim"][()][1:]), f"pixdim {raw['pixdim']} != {g['pixdim'][()]}")
            for k, v in header_strings(raw).items():
                expect(v == decode(g[k][()]), f"{k}: {v!r} != {decode(g[k][()])!r}")
            # qform-derived affines agree to rounding (operation order), sform and fallback ones exactly.
            aff, want_aff = np.asarray(img.affine), g["affine"][()]
            tol = 0.0 if int(raw["sform_code"]) > 0 or int(raw["qform_code"]) <= 0 else 1e-12
            expect(np.allclose(aff, want_aff, rtol=0, atol=tol * max(1.0, np.abs(want_aff).max())) if tol else same(aff, want_aff),
                   f"affine\n{aff}\n!= mmnet's\n{want_aff}")
    for f in failures:
        print("FAILED:", f)
    print(f"nifti_ref check: {len(names)} files, {checks} checks, {len(failures)} failed")
    return 1 if failures or not names else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2]))
    if len(sys.argv) == 2:
        generate(sys.argv[1])
        sys.exit(0)
    print(__doc__)
    sys.exit(2)
