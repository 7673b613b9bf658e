// HDF5 weight files: PyTorch interoperability (tools/torch2h5.py fixtures), dtypes and 0-d round trips,
// attributes, atomic saves, and damaged files (missing, foreign, truncated, corrupt, wrong data types), which
// must raise io_error naming the file and the problem, never crash.
#include <mmnet/io/weights.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cfloat>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "../support/mmnet_test.hpp"

namespace hdf5_test {

using namespace mmnet;
using mmnet::test::Backend;
using mmnet::test::files_in;
using mmnet::test::read_bytes;
using mmnet::test::write_bytes;
namespace fs = std::filesystem;

// ---- a mirror of tests/reference/io_ref.py's IoNet (Conv3d + BatchNorm3d blocks in a ModuleList) --------------
template <class T, class B>
struct IoConv : Module<T, B> {
  Parameter<T, B> weight, bias;
  IoConv(const Shape& w, bool with_bias) {
    weight.reset(w);
    if (with_bias) bias.reset({w[0]});
  }
  void members(Members<T, B>& m) override { m("weight", weight)("bias", bias); }
};
template <class T, class B>
struct IoBatchNorm : Module<T, B> {
  Parameter<T, B> weight, bias;
  Buffer<T, B> running_mean, running_var;
  Counter num_batches_tracked;
  explicit IoBatchNorm(index_t c) {
    weight.reset({c});
    bias.reset({c});
    running_mean.value = Tensor<T, B>({c});
    running_var.value = Tensor<T, B>::full({c}, T(1));
  }
  void members(Members<T, B>& m) override {
    m("weight", weight)("bias", bias)("running_mean", running_mean)("running_var", running_var)(
        "num_batches_tracked", num_batches_tracked);
  }
};
template <class T, class B>
struct IoBlock : Module<T, B> {
  IoConv<T, B> conv;
  IoBatchNorm<T, B> bn;
  IoBlock(index_t cin, index_t cout, index_t kd, index_t kh, index_t kw) : conv({cout, cin, kd, kh, kw}, true), bn(cout) {}
  void members(Members<T, B>& m) override { m("conv", conv)("bn", bn); }
};
template <class T, class B>
struct IoNet : Module<T, B> {
  IoConv<T, B> stem{{3, 2, 3, 2, 1}, false};
  std::vector<IoBlock<T, B>> blocks;
  IoConv<T, B> head{{2, 5, 1, 1, 1}, true};
  IoNet() {
    blocks.emplace_back(3, 4, 1, 3, 2);
    blocks.emplace_back(4, 5, 2, 1, 3);
  }
  void members(Members<T, B>& m) override { m("stem", stem)("blocks", blocks)("head", head); }
};

// Random values in every parameter and buffer, distinct counters.
template <class T, class B>
void randomize(Module<T, B>& m, std::uint64_t seed) {
  Generator g(seed);
  auto fill = [&](Tensor<T, B>& t) {
    std::vector<T> v(static_cast<std::size_t>(t.numel()));
    for (auto& x : v) x = static_cast<T>(g.normal());
    t.assign(v);
  };
  for (auto& np : m.named_parameters()) fill(np.second->value);
  std::int64_t k = 7;
  for (auto& nb : m.named_buffers()) {
    if (nb.second.tensor) fill(nb.second.tensor->value);
    if (nb.second.counter) nb.second.counter->value = k += 4;
  }
}

// ---- files -------------------------------------------------------------------------------------------------
inline std::string scratch(const std::string& name) { return mmnet::test::scratch_dir("io", name); }
inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Runs f, which must throw E; checks that the message contains every part. Returns the message.
template <class E = io_error>
std::string expect_error(const std::function<void()>& f, const std::vector<std::string>& parts, const std::string& what) {
  INFO(what);
  try {
    f();
  } catch (const E& e) {
    const std::string msg = e.what();
    for (auto& p : parts) CHECK_MESSAGE(contains(msg, p), "'" << p << "' missing from: " << msg);
    return msg;
  } catch (const std::exception& e) {
    FAIL_CHECK("wrong exception type: " << e.what());
    return {};
  }
  FAIL_CHECK("no exception");
  return {};
}

// Every reader refuses the file with io_error naming it and the problem.
inline void all_readers_fail(const std::string& path, const std::vector<std::string>& problem, const std::string& what) {
  std::vector<std::string> parts = problem;
  parts.insert(parts.begin(), path);
  expect_error([&] { io::read_all(path); }, parts, what + ": read_all");
  expect_error([&] { io::load_state_dict(path); }, parts, what + ": load_state_dict");
  IoNet<float, Backend> net;
  expect_error([&] { mmnet::load(net, path); }, parts, what + ": mmnet::load");
}

inline bool same_bits(const HostArray& a, const HostArray& b) {
  if (a.dtype != b.dtype || a.shape != b.shape || a.data.size() != b.data.size()) return false;
  return a.data.empty() || std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(double)) == 0;
}
inline bool same_entries(const StateDict& a, const StateDict& b) {
  if (a.size() != b.size()) return false;
  for (auto& [name, arr] : a) {
    const HostArray* o = b.find(name);
    if (!o || !same_bits(arr, *o)) return false;
  }
  return true;
}

inline HostArray arr(DType d, std::vector<index_t> shape, std::vector<double> data) {
  return HostArray{d, std::move(shape), std::move(data)};
}

// Restores a value on scope exit.
template <class V>
struct Restore {
  V& ref;
  V old;
  explicit Restore(V& r) : ref(r), old(r) {}
  ~Restore() { ref = old; }
};


// ---- PyTorch interoperability --------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("io: PyTorch weights converted by torch2h5.py load strictly (values, dtypes, counters)", T, float, double) {
  const std::string path = mmnet::test::fixture_dir() + "/io_torch.h5";
  mmnet::test::Fixture fx("io");

  const auto attrs = io::read_attributes(path);
  CHECK(attrs.at("model_name") == "io_net");
  CHECK(attrs.at("mmnet_format_version") == std::to_string(io::hdf5_format_version));
  CHECK(attrs.at("mmnet_library_version") == MMNET_VERSION_STRING);

  IoNet<T, Backend> net;
  const auto keys = net.state_dict().keys();
  CHECK(keys.size() == 17);
  CHECK(io::list_datasets(path) == keys);  // PyTorch's state_dict order, kept by torch2h5.py

  const StateDict file = io::read_all(path);
  for (auto& [name, a] : file) {
    INFO(name);
    if (contains(name, "num_batches_tracked")) {
      CHECK(a.dtype == DType::i64);
      CHECK(a.shape.empty());  // 0-d, as PyTorch
    } else {
      CHECK(a.dtype == DType::f32);
    }
  }

  const LoadResult r = mmnet::load(net, path, /*strict=*/true);
  CHECK(r.missing_keys.empty());
  CHECK(r.unexpected_keys.empty());
  const StateDict loaded = net.state_dict();
  for (auto& [name, a] : loaded) {
    const HostArray& e = fx.array("expected/" + name);
    INFO(name);
    REQUIRE(a.shape == e.shape);
    CHECK(a.data == e.data);  // float32 values, exact in float and double
  }
  CHECK(net.blocks[0].bn.num_batches_tracked.value == 3);
  CHECK(net.blocks[1].bn.num_batches_tracked.value == 5);
  CHECK(net.blocks[1].bn.running_var.value.to_vector() != std::vector<T>(5, T(1)));  // trained statistics
  mmnet::test::check_close(net.blocks[1].bn.running_mean.value, fx.array("expected/blocks.1.bn.running_mean"),
                           mmnet::test::tol_output<T>(), "blocks.1.bn.running_mean");

  // For tests/io/h5_roundtrip_check.py: the same weights written by mmnet, back to PyTorch. Both test
  // executables write these at once; the atomic save keeps each file whole.
  const std::string out = mmnet::test::fixture_dir() +
                          (std::is_same_v<T, float> ? "/io_saved_by_cpp.h5" : "/io_saved_by_cpp_f64.h5");
  mmnet::save(net, out, "io_net");
  IoNet<T, Backend> again;
  mmnet::load(again, out);
  CHECK(same_entries(again.state_dict(), loaded));
  CHECK(io::read_attributes(out).at("model_name") == "io_net");
}

TEST_CASE("io: files from mmnet and from torch2h5.py share one layout") {
  const std::string torch_path = mmnet::test::fixture_dir() + "/io_torch.h5";
  const std::string dir = scratch("layout");
  IoNet<float, Backend> net;
  mmnet::load(net, torch_path);
  const std::string cpp_path = dir + "/net.h5";
  mmnet::save(net, cpp_path, "io_net");
  CHECK(io::read_attributes(cpp_path) == io::read_attributes(torch_path));

  auto describe = [](const std::string& path) {
    std::vector<std::string> out;
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    REQUIRE(f >= 0);
    H5F_info2_t fi;
    H5Fget_info2(f, &fi);
    out.push_back("superblock v" + std::to_string(fi.super.version));
    for (auto& name : io::list_datasets(path)) {
      hid_t d = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
      hid_t p = H5Dget_create_plist(d);
      hid_t t = H5Dget_type(d);
      std::string s = name + ": layout " + std::to_string(H5Pget_layout(p)) + ", filters";
      for (int i = 0; i < H5Pget_nfilters(p); ++i) {
        unsigned flags = 0;
        size_t n = 0;
        s += " " + std::to_string(H5Pget_filter2(p, static_cast<unsigned>(i), &flags, &n, nullptr, 0, nullptr, nullptr));
      }
      s += H5Tequal(t, H5T_IEEE_F32LE) > 0 ? ", f32le" : H5Tequal(t, H5T_STD_I64LE) > 0 ? ", i64le" : ", other type";
      out.push_back(s);
      H5Tclose(t);
      H5Pclose(p);
      H5Dclose(d);
    }
    for (const char* a : {"mmnet_format_version", "mmnet_library_version", "model_name"}) {
      hid_t at = H5Aopen(f, a, H5P_DEFAULT);
      hid_t t = H5Aget_type(at);
      out.push_back(std::string(a) + ": class " + std::to_string(H5Tget_class(t)) + " cset " +
                    std::to_string(H5Tget_cset(t)) + " pad " + std::to_string(H5Tget_strpad(t)) + " variable " +
                    std::to_string(H5Tis_variable_str(t)));
      H5Tclose(t);
      H5Aclose(at);
    }
    H5Fclose(f);
    return out;
  };
  const auto a = describe(cpp_path), b = describe(torch_path);
  CHECK(a == b);
  CHECK(a.front() == "superblock v3");  // HDF5 1.10 format: checksummed metadata
  CHECK(contains(a[1], "stem.weight: layout " + std::to_string(H5D_CHUNKED) + ", filters " +
                           std::to_string(H5Z_FILTER_FLETCHER32) + ", f32le"));
  CHECK(contains(a[8], "blocks.0.bn.num_batches_tracked: layout " + std::to_string(H5D_COMPACT) + ", filters, i64le"));
}

// ---- round trips -------------------------------------------------------------------------------------------

TEST_CASE("io: every dtype, 0-d and empty arrays, special values and order round trip exactly") {
  const std::string dir = scratch("dtypes");
  const std::string path = dir + "/all.h5";
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  StateDict sd;
  sd.insert("z.f32", arr(DType::f32, {2, 3}, {-0.0, double(std::numeric_limits<float>::denorm_min()), FLT_MAX, -inf, nan, 0.1f}));
  sd.insert("a.f64", arr(DType::f64, {3, 1, 2}, {DBL_MIN / 4, DBL_MAX, inf, nan, 0.1, -3.141592653589793}));
  sd.insert("m.i64", arr(DType::i64, {5}, {-9007199254740992.0, 9007199254740992.0, 0, -1, 4611686018427387904.0}));
  sd.insert("scalar.f32", arr(DType::f32, {}, {1.5}));
  sd.insert("scalar.f64", arr(DType::f64, {}, {-2.25}));
  sd.insert("bn.num_batches_tracked", arr(DType::i64, {}, {123456789012.0}));
  sd.insert("empty.f32", arr(DType::f32, {0, 3}, {}));
  sd.insert("empty.i64", arr(DType::i64, {0}, {}));
  std::vector<double> r5(2 * 3 * 1 * 4 * 5);
  for (std::size_t i = 0; i < r5.size(); ++i) r5[i] = std::sin(0.37 * static_cast<double>(i)) * 1e3;
  sd.insert("rank5.f64", arr(DType::f64, {2, 3, 1, 4, 5}, r5));
  // More than 8 links: the root switches to dense (indexed) link storage.
  for (int i = 29; i >= 0; --i)
    sd.insert("layers." + std::to_string(i) + ".weight", arr(DType::f32, {2}, {double(i), -0.5f * float(i)}));

  const std::string model = "Ünet-β 3d";  // UTF-8
  io::save_state_dict(path, sd, model);
  CHECK(io::list_datasets(path) == sd.keys());
  const StateDict back = io::read_all(path);
  REQUIRE(back.keys() == sd.keys());
  for (auto& [name, a] : sd) {
    INFO(name);
    CHECK(same_bits(back.at(name), a));
  }
  CHECK(same_entries(io::load_state_dict(path), sd));
  const auto attrs = io::read_attributes(path);
  CHECK(attrs.size() == 3);
  CHECK(attrs.at("model_name") == model);
  CHECK(attrs.at("mmnet_format_version") == "1");
  CHECK(attrs.at("mmnet_library_version") == MMNET_VERSION_STRING);

  // An empty model name and an empty state dict are valid.
  io::save_state_dict(path, StateDict{});
  CHECK(io::read_all(path).empty());
  CHECK(io::read_attributes(path).at("model_name").empty());

  // Saving the same content twice gives the same bytes (no timestamps), so weight files diff cleanly.
  io::save_state_dict(dir + "/a.h5", sd, model);
  io::save_state_dict(dir + "/b.h5", sd, model);
  CHECK(read_bytes(dir + "/a.h5") == read_bytes(dir + "/b.h5"));
}

TEST_CASE("io: arrays larger than a chunk are split into several checksummed chunks") {
  CHECK(io::detail::chunk_dims({10, 10, 10}, 8) == std::vector<hsize_t>{10, 10, 10});
  Restore<std::size_t> restore(io::detail::max_chunk_bytes());
  io::detail::max_chunk_bytes() = 64;
  CHECK(io::detail::chunk_dims({10, 10, 10}, 8) == std::vector<hsize_t>{1, 1, 8});
  CHECK(io::detail::chunk_dims({3, 2, 4}, 4) == std::vector<hsize_t>{2, 2, 4});
  CHECK(io::detail::chunk_dims({100}, 8) == std::vector<hsize_t>{8});
  CHECK(io::detail::chunk_dims({5}, 128) == std::vector<hsize_t>{1});

  const std::string path = scratch("chunks") + "/big.h5";
  StateDict sd;
  std::vector<double> v(1000), w(7 * 13);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.25 * static_cast<double>(i) - 3;
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(std::cos(static_cast<double>(i)));
  sd.insert("big", arr(DType::f64, {10, 10, 10}, v));
  sd.insert("odd", arr(DType::f32, {7, 13}, w));
  io::save_state_dict(path, sd);
  CHECK(same_entries(io::read_all(path), sd));
}

TEST_CASE_TEMPLATE("io: a module saved in one precision loads into a fresh module of the other", T, float, double) {
  using U = std::conditional_t<std::is_same_v<T, float>, double, float>;
  const std::string path = scratch(std::string("precision_") + (std::is_same_v<T, float> ? "f" : "d")) + "/net.h5";
  IoNet<T, Backend> a;
  randomize(a, 42);
  mmnet::save(a, path, "net");
  const StateDict file = io::read_all(path);
  CHECK(file.at("stem.weight").dtype == (std::is_same_v<T, float> ? DType::f32 : DType::f64));
  CHECK(file.at("blocks.1.bn.num_batches_tracked").dtype == DType::i64);

  IoNet<U, Backend> b;
  mmnet::load(b, path);
  IoNet<T, Backend> c;
  mmnet::load(c, path);
  CHECK(same_entries(c.state_dict(), a.state_dict()));
  const StateDict sa = a.state_dict(), sb = b.state_dict();
  for (auto& [name, x] : sa) {
    INFO(name);
    const HostArray& y = sb.at(name);
    REQUIRE(y.data.size() == x.data.size());
    for (std::size_t i = 0; i < x.data.size(); ++i) CHECK(y.data[i] == static_cast<double>(static_cast<U>(x.data[i])));
  }
  CHECK(b.blocks[1].bn.num_batches_tracked.value == a.blocks[1].bn.num_batches_tracked.value);
  CHECK(b.blocks[0].bn.num_batches_tracked.value != 0);
}

// ---- atomic saves ------------------------------------------------------------------------------------------

TEST_CASE("io: a failed save leaves the destination untouched and no temporary file") {
  const std::string dir = scratch("atomic");
  IoNet<float, Backend> net;
  randomize(net, 3);

  SUBCASE("the directory is missing") {
    const std::string path = dir + "/no/such/dir/w.h5";
    expect_error([&] { mmnet::save(net, path); }, {path, "cannot create the temporary file", "directory missing"}, "missing dir");
    CHECK_FALSE(fs::exists(dir + "/no"));
    CHECK(files_in(dir).empty());
  }

  const std::string path = dir + "/good.h5";
  mmnet::save(net, path, "good");
  const std::string good_bytes = read_bytes(path);
  auto still_good = [&] {
    CHECK(read_bytes(path) == good_bytes);
    IoNet<float, Backend> other;
    mmnet::load(other, path);
    CHECK(same_entries(other.state_dict(), net.state_dict()));
    CHECK(files_in(dir) == std::vector<std::string>{"good.h5"});  // no temporary file left
  };

  SUBCASE("an entry's data does not match its shape") {
    StateDict bad = net.state_dict();
    bad.insert("blocks.0.bn.running_mean", arr(DType::f32, {2, 3}, {1, 2, 3, 4, 5}));
    expect_error([&] { io::save_state_dict(path, bad); },
                 {path, "'blocks.0.bn.running_mean' holds 5 values for shape (2, 3) (6 expected)"}, "size");
    still_good();
  }
  SUBCASE("invalid names and values") {
    for (const std::string name : {"", ".", "a/b"}) {
      StateDict bad = net.state_dict();
      bad.insert(name, arr(DType::f32, {1}, {1}));
      expect_error([&] { io::save_state_dict(path, bad); }, {path, "not a valid dataset name"}, "name '" + name + "'");
    }
    StateDict bad = net.state_dict();
    bad.insert("count", arr(DType::i64, {}, {2.5}));
    expect_error([&] { io::save_state_dict(path, bad); }, {path, "'count' is int64 but holds the non-integer value"}, "int64");
    bad.insert("count", arr(DType::f32, {2, -1}, {}));
    expect_error([&] { io::save_state_dict(path, bad); }, {path, "'count': invalid shape"}, "negative dim");
    still_good();
  }
  SUBCASE("the disk fills up while writing (file size limit)") {
    rlimit old{};
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // writes past the limit then fail with EFBIG
    StateDict big;
    big.insert("w", arr(DType::f64, {256, 256}, std::vector<double>(256 * 256, 1.25)));
    rlimit lim = old;
    lim.rlim_cur = 64 * 1024;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    std::string msg;
    try {
      io::save_state_dict(path, big);
    } catch (const io_error& e) {
      msg = e.what();
    }
    setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
    CHECK(contains(msg, path));
    CHECK(contains(msg, "disk full"));
    // No file is left open inside HDF5 (one would make HDF5 1.10 crash at program exit).
    CHECK(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0);
    still_good();
  }
  SUBCASE("the destination is a directory") {
    fs::create_directory(dir + "/adir");
    expect_error([&] { mmnet::save(net, dir + "/adir"); }, {dir + "/adir", "cannot rename"}, "dir");
    CHECK(fs::is_empty(dir + "/adir"));
    fs::remove(dir + "/adir");
    still_good();
  }
  SUBCASE("a successful save replaces the file") {
    IoNet<float, Backend> other;
    randomize(other, 4);
    mmnet::save(other, path);
    IoNet<float, Backend> check;
    mmnet::load(check, path);
    CHECK(same_entries(check.state_dict(), other.state_dict()));
    CHECK(files_in(dir) == std::vector<std::string>{"good.h5"});
  }
}

// ---- damaged and foreign files -----------------------------------------------------------------------------

TEST_CASE("io: missing, foreign and empty files raise io_error naming the file") {
  const std::string dir = scratch("foreign");
  all_readers_fail(dir + "/missing.h5", {"cannot open the file", "No such file"}, "missing");
  expect_error([&] { io::list_datasets(dir + "/missing.h5"); }, {dir + "/missing.h5", "No such file"}, "list missing");
  expect_error([&] { io::read_attributes(dir + "/missing.h5"); }, {dir + "/missing.h5", "No such file"}, "attrs missing");
  all_readers_fail(dir, {"is a directory"}, "directory");

  write_bytes(dir + "/empty.h5", "");
  all_readers_fail(dir + "/empty.h5", {"not an HDF5 file", "empty"}, "empty");
  write_bytes(dir + "/text.h5", "stem.weight = [1, 2, 3]\nthis is a text file, not HDF5\n");
  all_readers_fail(dir + "/text.h5", {"not an HDF5 file"}, "text");
  std::string noise(5000, '\0');
  Generator g(5);
  for (auto& c : noise) c = static_cast<char>(g.uniform() * 256);
  write_bytes(dir + "/noise.h5", noise);
  all_readers_fail(dir + "/noise.h5", {"not an HDF5 file"}, "random bytes");
  write_bytes(dir + "/sig.h5", std::string("\x89HDF\r\n\x1a\n", 8) + noise);
  all_readers_fail(dir + "/sig.h5", {"truncated or corrupt"}, "signature then random bytes");
  expect_error([&] { io::read_attributes(dir + "/text.h5"); }, {dir + "/text.h5", "not an HDF5 file"}, "attrs text");
}

TEST_CASE("io: datasets that are not numbers raise io_error naming the dataset and its type") {
  const std::string d = mmnet::test::fixture_dir();
  all_readers_fail(d + "/io_bad_string.h5", {"dataset 'weight'", "string data", "float32, float64 or int64"}, "string");
  all_readers_fail(d + "/io_bad_vlen.h5", {"dataset 'weight'", "string data"}, "variable-length string");
  all_readers_fail(d + "/io_bad_compound.h5", {"dataset 'weight'", "compound data"}, "compound");
  all_readers_fail(d + "/io_bad_enum.h5", {"dataset 'mask'", "enum"}, "bool");
  all_readers_fail(d + "/io_bad_null.h5", {"dataset 'weight'", "null dataspace"}, "h5py.Empty");
  all_readers_fail(d + "/io_bad_unwritten.h5", {"dataset 'weight' stores 0 bytes for 6 values", "never written"},
                   "never written");
  // A newer format is refused by the weight loaders (read_all, for fixtures, reads any file).
  expect_error([&] { io::load_state_dict(d + "/io_bad_version.h5"); }, {d + "/io_bad_version.h5", "mmnet_format_version is '2'"},
               "version");
  CHECK(io::read_all(d + "/io_bad_version.h5").size() == 1);
}

TEST_CASE("io: plain h5py files: nested groups, name order, h5py's attributes") {
  const std::string path = mmnet::test::fixture_dir() + "/io_plain.h5";
  CHECK(io::list_datasets(path) == std::vector<std::string>{"alpha", "grp/inner", "half", "zeta"});
  const StateDict sd = io::read_all(path);
  CHECK(same_bits(sd.at("grp/inner"), arr(DType::i64, {}, {7})));           // int32 widens to int64
  CHECK(same_bits(sd.at("half"), arr(DType::f32, {2}, {0.5, -2.0})));       // float16 widens to float32
  CHECK(same_bits(sd.at("alpha"), arr(DType::f64, {2, 2}, {0, 1, 2, 3})));
  const auto attrs = io::read_attributes(path);
  CHECK(attrs.at("model_name") == "plain-ü");  // h5py's variable-length UTF-8 string
  CHECK(attrs.at("epochs") == "12");
  CHECK(attrs.at("lr") == "0.5");
  CHECK(attrs.count("sizes") == 0);  // arrays are left out
  IoNet<double, Backend> net;
  expect_error<state_dict_error>([&] { mmnet::load(net, path); }, {path, "missing keys (17)", "unexpected keys (4)"}, "load");
}

TEST_CASE("io: truncated files raise io_error at every cut") {
  const std::string dir = scratch("truncated");
  IoNet<float, Backend> net;
  randomize(net, 9);
  mmnet::save(net, dir + "/net.h5");
  for (const std::string& src : {dir + "/net.h5", mmnet::test::fixture_dir() + "/io_torch.h5"}) {
    const std::string bytes = read_bytes(src);
    const std::size_t n = bytes.size();
    std::vector<std::size_t> cuts = {1, 4, 7, 8, 9, 16, 47, 48, 100, 200, 511, 512, 1024, 2048, n / 4, n / 3, n / 2,
                                     2 * n / 3, n - 512, n - 64, n - 9, n - 8, n - 1};
    for (std::size_t c = 13; c < n; c += 211) cuts.push_back(c);
    const std::string cut_path = dir + "/cut.h5";
    for (std::size_t c : cuts) {
      if (c == 0 || c >= n) continue;
      write_bytes(cut_path, bytes.substr(0, c));
      all_readers_fail(cut_path, {}, "cut at " + std::to_string(c) + " of " + std::to_string(n) + " (" + src + ")");
    }
  }
  // The problem is named.
  const std::string bytes = read_bytes(dir + "/net.h5");
  write_bytes(dir + "/cut.h5", bytes.substr(0, bytes.size() / 2));
  expect_error([&] { io::read_all(dir + "/cut.h5"); }, {dir + "/cut.h5", "truncated or corrupt", "truncated file"}, "message");
  write_bytes(dir + "/cut.h5", bytes.substr(0, 4));
  expect_error([&] { io::read_all(dir + "/cut.h5"); }, {dir + "/cut.h5", "not an HDF5 file"}, "message");
}

// Every byte of a file, changed: loading must fail with io_error or give exactly the original entries, never
// wrong values and never a crash. MMNET_IO_FLIP_STRIDE=n tests every n-th byte (default 1: all of them).
TEST_CASE("io: corrupt files: every changed byte is detected or harmless") {
  const std::string dir = scratch("corrupt");
  IoNet<float, Backend> net;
  randomize(net, 21);
  mmnet::save(net, dir + "/net.h5", "net");
  StateDict chunked;
  {
    Restore<std::size_t> restore(io::detail::max_chunk_bytes());
    io::detail::max_chunk_bytes() = 64;  // several chunks: the fixed-array chunk index is covered too
    std::vector<double> v(6 * 7 * 5);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(0.5 * static_cast<double>(i) - 7);
    chunked.insert("w", arr(DType::f32, {6, 7, 5}, v));
    chunked.insert("n", arr(DType::i64, {}, {12}));
    io::save_state_dict(dir + "/chunked.h5", chunked);
  }
  std::size_t stride = 1;
  if (const char* s = std::getenv("MMNET_IO_FLIP_STRIDE")) stride = std::max(1, std::atoi(s));

  for (const std::string& src : {dir + "/net.h5", mmnet::test::fixture_dir() + "/io_torch.h5", dir + "/chunked.h5"}) {
    const std::string bytes = read_bytes(src);
    const StateDict original = io::read_all(src);
    const auto original_attrs = io::read_attributes(src);
    const std::string bad = dir + "/bad.h5";
    write_bytes(bad, bytes);
    const int fd = ::open(bad.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    std::size_t detected = 0, harmless = 0, wrong = 0;
    for (std::size_t i = 0; i < bytes.size(); i += stride) {
      // A single-bit flip on even offsets, all bits on odd ones.
      const auto mask = static_cast<unsigned char>(i % 2 ? 0xFF : 1u << (i / 2 % 8));
      const char changed = static_cast<char>(static_cast<unsigned char>(bytes[i]) ^ mask);
      if (::pwrite(fd, &changed, 1, static_cast<off_t>(i)) != 1) FAIL("cannot write " << bad);
      try {
        const StateDict sd = io::load_state_dict(bad);
        const auto attrs = io::read_attributes(bad);
        if (same_entries(sd, original) && attrs == original_attrs) {
          ++harmless;
        } else {
          ++wrong;
          if (wrong <= 5) MESSAGE(src << ": byte " << i << " ^ " << int(mask) << " gave different entries, undetected");
        }
      } catch (const io_error& e) {
        ++detected;
        if (!contains(e.what(), bad)) FAIL_CHECK("message without the file name: " << e.what());
      } catch (const std::exception& e) {
        FAIL_CHECK(src << ": byte " << i << ": wrong exception type: " << e.what());
      }
      if (::pwrite(fd, &bytes[i], 1, static_cast<off_t>(i)) != 1) FAIL("cannot write " << bad);
    }
    ::close(fd);
    MESSAGE(src << ": " << bytes.size() << " bytes; changed bytes detected " << detected << ", harmless " << harmless);
    CHECK(wrong == 0);
    CHECK(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0);  // every failed load closed its file
    CHECK(detected > 0);
  }
}

// Files without checksums (h5py's default format) cannot be verified: a changed byte may go unnoticed. Loading
// must still end in io_error or a result, never a crash or another exception.
TEST_CASE("io: corrupt files without checksums never crash the loader") {
  const std::string src = mmnet::test::fixture_dir() + "/io_plain_small.h5";
  CHECK(io::list_datasets(src) == std::vector<std::string>{"w", "b", "n"});  // creation order
  const std::string bytes = read_bytes(src);
  const std::string bad = scratch("plain_corrupt") + "/bad.h5";
  std::size_t detected = 0, loaded = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    std::string b = bytes;
    b[i] = static_cast<char>(static_cast<unsigned char>(b[i]) ^ (i % 2 ? 0xFF : 1u << (i / 2 % 8)));
    write_bytes(bad, b);
    try {
      io::load_state_dict(bad);
      ++loaded;
    } catch (const io_error&) {
      ++detected;
    } catch (const std::exception& e) {
      FAIL_CHECK("byte " << i << ": wrong exception type: " << e.what());
    }
  }
  MESSAGE(src << ": " << bytes.size() << " bytes; changed bytes detected " << detected << ", loaded " << loaded);
  CHECK(detected > 0);
}

// ---- mmnet::load's report ----------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("io: mmnet::load reports every missing, unexpected and mismatched key and names the file", T, float, double) {
  const std::string dir = scratch(std::string("report_") + (std::is_same_v<T, float> ? "f" : "d"));
  IoNet<T, Backend> src;
  randomize(src, 5);
  StateDict sd = src.state_dict();
  StateDict bad;
  for (auto& [name, a] : sd)
    if (name != "head.bias") bad.insert(name, a);
  bad.insert("blocks.0.conv.weight", arr(DType::f32, {4, 3, 1, 3, 3}, std::vector<double>(108, 0.5)));
  bad.insert("stem.weight", arr(DType::i64, {3, 2, 3, 2, 1}, std::vector<double>(36, 1)));
  bad.insert("spare.weight", arr(DType::f32, {1}, {1}));
  const std::string path = dir + "/bad.h5";
  io::save_state_dict(path, bad);

  IoNet<T, Backend> net;
  const StateDict before = net.state_dict();
  const std::string msg = expect_error<state_dict_error>(
      [&] { mmnet::load(net, path); },
      {path, "shape mismatch (2)", "blocks.0.conv.weight (expected (4, 3, 1, 3, 2), got (4, 3, 1, 3, 3))",
       "stem.weight (expected a floating-point array, got int64)", "missing keys (1): head.bias",
       "unexpected keys (1): spare.weight"},
      "strict");
  CHECK(same_entries(net.state_dict(), before));  // nothing loaded
  // Shape mismatches throw without strict too.
  expect_error<state_dict_error>([&] { mmnet::load(net, path, false); }, {path, "shape mismatch (2)"}, "non-strict");
  CHECK(same_entries(net.state_dict(), before));

  // Without mismatches, a non-strict load reports missing and unexpected keys and loads the rest.
  StateDict partial;
  for (auto& [name, a] : sd)
    if (name != "head.bias") partial.insert(name, a);
  partial.insert("spare.weight", arr(DType::f32, {1}, {1}));
  io::save_state_dict(path, partial);
  const LoadResult r = mmnet::load(net, path, false);
  CHECK(r.missing_keys == std::vector<std::string>{"head.bias"});
  CHECK(r.unexpected_keys == std::vector<std::string>{"spare.weight"});
  CHECK(net.stem.weight.value.to_vector() == src.stem.weight.value.to_vector());
  expect_error<state_dict_error>([&] { mmnet::load(net, path); }, {path, "missing keys (1): head.bias"}, "strict partial");
}

TEST_CASE("io: HDF5's error printing stays off and the caller's handler is kept") {
  struct Count {
    static herr_t handler(hid_t, void* data) {
      ++*static_cast<int*>(data);
      return 0;
    }
  };
  int calls = 0;
  H5E_auto2_t old_func = nullptr;
  void* old_data = nullptr;
  H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
  H5Eset_auto2(H5E_DEFAULT, &Count::handler, &calls);
  const std::string dir = scratch("quiet");
  write_bytes(dir + "/sig.h5", std::string("\x89HDF\r\n\x1a\n", 8) + std::string(600, 'x'));
  CHECK_THROWS_AS(io::read_all(dir + "/sig.h5"), io_error);
  CHECK_THROWS_AS(io::read_all(mmnet::test::fixture_dir() + "/io_bad_compound.h5"), io_error);
  H5E_auto2_t func = nullptr;
  void* data = nullptr;
  H5Eget_auto2(H5E_DEFAULT, &func, &data);
  H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
  const bool kept = func == &Count::handler;
  CHECK(kept);
  CHECK(data == &calls);
  CHECK(calls == 0);
}


// ---- grouped files (names with '/', as io/checkpoint.hpp writes them) ----------------------------------------

TEST_CASE("io: grouped files: nested names round trip in state-dict order, with extra attributes") {
  const std::string dir = scratch("grouped");
  const std::string path = dir + "/g.h5";
  StateDict sd;
  sd.insert("model/conv.weight", arr(DType::f32, {2, 3, 1}, {1, -2, 3.5, 0.25, -0.0, 7}));
  sd.insert("model/bn.num_batches_tracked", arr(DType::i64, {}, {42}));
  sd.insert("model/deep/er/x", arr(DType::f64, {3}, {0.1, -1e300, 2}));
  sd.insert("top", arr(DType::f64, {}, {-2.5}));
  // More than 8 links in one group: dense (indexed) link storage; names listed out of name order.
  for (int i = 11; i >= 0; --i)
    sd.insert("optimizer/state." + std::to_string(i) + ".step", arr(DType::i64, {}, {double(i)}));
  sd.insert("optimizer/empty", arr(DType::f32, {0, 2}, {}));
  sd.insert("z/a", arr(DType::f64, {2}, {3, 4}));

  io::save_state_dict(path, sd, {{"kind", "grouped"}});  // one pair: the map overload, not a std::string
  CHECK(io::list_datasets(path) == sd.keys());
  const StateDict back = io::read_all(path);
  REQUIRE(back.keys() == sd.keys());
  for (const auto& entry : sd) {  // no structured bindings: doctest's macros capture in lambdas
    INFO(entry.first);
    CHECK(same_bits(back.at(entry.first), entry.second));
  }
  CHECK(same_entries(io::load_state_dict(path), sd));
  const auto attrs = io::read_attributes(path);
  CHECK(attrs.size() == 4);
  CHECK(attrs.at("kind") == "grouped");
  CHECK(attrs.at("model_name").empty());  // always present
  CHECK(attrs.at("mmnet_format_version") == "1");
  CHECK(attrs.at("mmnet_library_version") == MMNET_VERSION_STRING);
  CHECK(files_in(dir) == std::vector<std::string>{"g.h5"});

  // Groups track and index creation order as the root does; data is chunked with Fletcher-32 as in weight files.
  {
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    REQUIRE(f >= 0);
    for (const char* g : {"model", "model/deep", "model/deep/er", "optimizer", "z"}) {
      INFO(g);
      hid_t gid = H5Gopen2(f, g, H5P_DEFAULT);
      REQUIRE(gid >= 0);
      hid_t gcpl = H5Gget_create_plist(gid);
      unsigned flags = 0;
      CHECK(H5Pget_link_creation_order(gcpl, &flags) >= 0);
      CHECK(flags == (H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED));
      H5Pclose(gcpl);
      H5Gclose(gid);
    }
    hid_t d = H5Dopen2(f, "model/conv.weight", H5P_DEFAULT);
    hid_t p = H5Dget_create_plist(d);
    CHECK(H5Pget_layout(p) == H5D_CHUNKED);
    unsigned flags = 0;
    size_t n = 0;
    CHECK(H5Pget_nfilters(p) == 1);
    CHECK(H5Pget_filter2(p, 0, &flags, &n, nullptr, 0, nullptr, nullptr) == H5Z_FILTER_FLETCHER32);
    H5Pclose(p);
    H5Dclose(d);
    H5Fclose(f);
  }

  // Attributes, model_name among them; same content, same bytes.
  io::save_state_dict(dir + "/a.h5", sd, {{"model_name", "Ünet"}, {"epoch", "3"}});
  io::save_state_dict(dir + "/b.h5", sd, {{"model_name", "Ünet"}, {"epoch", "3"}});
  CHECK(read_bytes(dir + "/a.h5") == read_bytes(dir + "/b.h5"));
  const auto attrs2 = io::read_attributes(dir + "/a.h5");
  CHECK(attrs2.size() == 4);
  CHECK(attrs2.at("model_name") == "Ünet");
  CHECK(attrs2.at("epoch") == "3");

  // A flat state dict written as a grouped file is a plain weight file plus the extra attributes.
  IoNet<float, Backend> net;
  randomize(net, 8);
  io::save_state_dict(dir + "/flat.h5", net.state_dict(), {{"model_name", "io_net"}});
  IoNet<float, Backend> again;
  mmnet::load(again, dir + "/flat.h5");
  CHECK(same_entries(again.state_dict(), net.state_dict()));

  // Entries of one group that are not contiguous in the state dict come back grouped by first appearance.
  StateDict mixed;
  mixed.insert("a/x", arr(DType::f64, {1}, {1}));
  mixed.insert("b", arr(DType::f64, {1}, {2}));
  mixed.insert("a/y", arr(DType::f64, {1}, {3}));
  io::save_state_dict(path, mixed, std::map<std::string, std::string>{});
  CHECK(io::list_datasets(path) == std::vector<std::string>{"a/x", "a/y", "b"});
  CHECK(same_entries(io::read_all(path), mixed));
}

TEST_CASE("io: grouped files: invalid names and attributes are refused before any file is touched") {
  const std::string dir = scratch("grouped_bad");
  const std::string path = dir + "/g.h5";
  StateDict good;
  good.insert("m/w", arr(DType::f32, {2}, {1, 2}));
  io::save_state_dict(path, good, {{"model_name", "good"}});
  const std::string good_bytes = read_bytes(path);
  auto still_good = [&] {
    CHECK(read_bytes(path) == good_bytes);
    CHECK(files_in(dir) == std::vector<std::string>{"g.h5"});
  };

  for (const std::string name : {"", ".", "/a", "a/", "a//b", "./a", "a/./b", "a/.", "/"}) {
    StateDict bad = good;
    bad.insert(name, arr(DType::f32, {1}, {1}));
    expect_error([&] { io::save_state_dict(path, bad, {{"model_name", "bad"}}); },
                 {path, "entry '" + name + "'", "not a valid dataset name"}, "name '" + name + "'");
    still_good();
  }
  {  // a name that is both a dataset and a group, either way round
    StateDict bad = good;
    bad.insert("m", arr(DType::f32, {1}, {1}));
    expect_error([&] { io::save_state_dict(path, bad, {{"model_name", "bad"}}); },
                 {path, "entry 'm' is also the group of entry 'm/w'"}, "dataset then group");
    StateDict bad2;
    bad2.insert("a/b/c", arr(DType::f32, {1}, {1}));
    bad2.insert("a/b", arr(DType::f32, {1}, {1}));
    expect_error([&] { io::save_state_dict(path, bad2, {{"model_name", "bad"}}); },
                 {path, "entry 'a/b' is also the group of entry 'a/b/c'"}, "group then dataset");
    still_good();
  }
  {  // the other checks apply to nested entries as to flat ones
    StateDict bad = good;
    bad.insert("m/n/count", arr(DType::i64, {}, {2.5}));
    expect_error([&] { io::save_state_dict(path, bad, {{"model_name", "bad"}}); },
                 {path, "'m/n/count' is int64 but holds the non-integer value"}, "int64");
    bad.insert("m/n/count", arr(DType::f64, {2, 3}, {1}));
    expect_error([&] { io::save_state_dict(path, bad, {{"model_name", "bad"}}); },
                 {path, "'m/n/count' holds 1 values for shape (2, 3) (6 expected)"}, "size");
    still_good();
  }
  for (const std::string key : {"mmnet_format_version", "mmnet_library_version"}) {
    expect_error([&] { io::save_state_dict(path, good, {{key, "9"}}); }, {path, key, "written by mmnet itself"}, key);
    still_good();
  }
  expect_error([&] { io::save_state_dict(path, good, {{"", "x"}}); }, {path, "attribute name is empty"}, "empty key");
  still_good();
  CHECK_THROWS_WITH_AS(io::save_state_dict("", good, {{"model_name", "x"}}), doctest::Contains("empty file name"), io_error);
  // The weight-file writer stays flat.
  expect_error([&] { io::save_state_dict(path, good, "flat"); }, {path, "'m/w'", "not a valid dataset name"}, "flat");
  still_good();
}

}  // namespace hdf5_test
