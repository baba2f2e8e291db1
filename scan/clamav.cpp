// The ClamAV detector: libclamav in this process, with the signature databases of one folder
// (freshclam's official ones, or custom .hdb/.ndb/... files). The engine loads on first use;
// without a usable database the detector is unavailable and the scan goes on without it.
#include <clamav.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <splitfs/errors.hpp>

#include "scan/detectors.hpp"

namespace splitfs::scan::detail {

namespace {

namespace fs = std::filesystem;

// ClamAV cannot scan files of 2 GiB or more.
constexpr std::uint64_t kClamAvMaxBytes = (2ull << 30) - 1;

// libclamav logs through one process-wide callback: kept quiet, except for the last error while
// an engine loads (it says why a database was refused).
std::mutex log_mutex;
std::string last_error;

void on_message(enum cl_msg severity, const char*, const char* message, void*) {
  if (severity != CL_MSG_ERROR || message == nullptr)
    return;
  std::lock_guard lock(log_mutex);
  last_error = message;
  while (!last_error.empty() && (last_error.back() == '\n' || last_error.back() == ' '))
    last_error.pop_back();
}

cl_error_t initialize_clamav() {
  static std::once_flag once;
  static cl_error_t result = CL_SUCCESS;
  std::call_once(once, [] {
    cl_set_clcb_msg(on_message);
    result = cl_init(CL_INIT_DEFAULT);
  });
  return result;
}

bool is_database_file(const fs::path& file) {
  static const std::set<std::string, std::less<>> kinds{
      ".cvd", ".cld", ".cud", ".hdb", ".hsb", ".hdu", ".hsu", ".mdb", ".msb", ".mdu",
      ".msu", ".ndb", ".ndu", ".ldb", ".ldu", ".sdb", ".idb", ".cdb", ".cbc", ".fp",
      ".sfp", ".gdb", ".pdb", ".wdb", ".ftm", ".crb", ".yar", ".yara"};
  return kinds.contains(file.extension().string());
}

struct EngineDeleter {
  void operator()(cl_engine* e) const { cl_engine_free(e); }
};

struct ReadContext {
  Source& source;
  std::exception_ptr failure;
};

off_t read_at(void* handle, void* buffer, size_t count, off_t offset) {
  auto* context = static_cast<ReadContext*>(handle);
  try {
    return static_cast<off_t>(
        context->source.read_at(static_cast<std::uint64_t>(offset),
                                MutableByteView(static_cast<std::uint8_t*>(buffer), count)));
  } catch (...) {
    context->failure = std::current_exception();
    return -1;
  }
}

struct MapCloser {
  void operator()(cl_fmap_t* map) const { cl_fmap_close(map); }
};

class ClamAv : public Detector {
 public:
  explicit ClamAv(const Settings& settings)
      : database_(settings.clamav_database),
        max_bytes_(std::min(settings.clamav_max_bytes, kClamAvMaxBytes)) {}

  std::string_view name() const override { return "clamav"; }
  bool wants_members() const override { return false; }  // it opens archives itself
  bool reads_through(std::uint64_t size) const override { return size <= max_bytes_; }

  std::string unavailable() override {
    std::lock_guard lock(load_mutex_);
    if (!loaded_) {
      loaded_ = true;
      why_ = load();
    }
    return why_;
  }

  void scan(const Item& item, Verdict& verdict) override {
    if (item.source.size() == 0)
      return;  // nothing to match (and libclamav maps no empty file)
    ReadContext context{item.source, nullptr};
    std::unique_ptr<cl_fmap_t, MapCloser> map(
        cl_fmap_open_handle(&context, 0, static_cast<size_t>(item.source.size()), read_at, 1));
    if (!map)
      throw std::bad_alloc();
    cl_scan_options options{};
    options.parse = ~0u;  // every format ClamAV can open; no heuristic alerts of its own
    const char* virus = nullptr;
    unsigned long scanned = 0;
    const std::string name(item.name);
    const cl_error_t result = cl_scanmap_callback(map.get(), name.c_str(), &virus, &scanned,
                                                  engine_.get(), &options, nullptr);
    if (context.failure)
      std::rethrow_exception(context.failure);
    if (result == CL_VIRUS) {
      verdict.add({Severity::malicious, "clamav", virus ? virus : "unnamed",
                   std::string(item.where),
                   "matched ClamAV signature " + std::string(virus ? virus : "unnamed")});
    } else if (result != CL_CLEAN) {
      verdict.note(std::string("clamav: ") + cl_strerror(result));
    }
    if (item.source.size() > max_bytes_) {
      verdict.note("clamav: files over " + std::to_string(max_bytes_ >> 20) +
                   " MiB are not checked (scan.clamav_max_bytes)");
    }
  }

 private:
  // Empty on success, else why ClamAV cannot scan.
  std::string load() {
    if (database_.empty())
      return "off (no scan.clamav_database)";
    std::error_code ec;
    bool any = false;
    if (fs::is_directory(database_, ec)) {
      for (fs::directory_iterator it(database_, ec), end; !ec && it != end; it.increment(ec))
        any = any || is_database_file(it->path());
    }
    if (!any) {
      return "no signature database in " + database_.string() +
             " (run freshclam, or point scan.clamav_database at a folder of signatures)";
    }
    if (const cl_error_t r = initialize_clamav(); r != CL_SUCCESS)
      return std::string("libclamav failed to initialize: ") + cl_strerror(r);
    std::unique_ptr<cl_engine, EngineDeleter> engine(cl_engine_new());
    if (!engine)
      return "libclamav could not create an engine";
    cl_engine_set_num(engine.get(), CL_ENGINE_MAX_FILESIZE, static_cast<long long>(max_bytes_));
    cl_engine_set_num(engine.get(), CL_ENGINE_MAX_SCANSIZE,
                      static_cast<long long>(std::min(max_bytes_ * 4, kClamAvMaxBytes)));
    unsigned int signatures = 0;
    {
      std::lock_guard lock(log_mutex);
      last_error.clear();
    }
    cl_error_t r = cl_load(database_.c_str(), engine.get(), &signatures, CL_DB_STDOPT);
    if (r == CL_SUCCESS)
      r = cl_engine_compile(engine.get());
    if (r != CL_SUCCESS) {
      std::lock_guard lock(log_mutex);
      return "cannot load the signatures in " + database_.string() + ": " + cl_strerror(r) +
             (last_error.empty() ? "" : " (" + last_error + ")");
    }
    if (signatures == 0)
      return "no signatures in " + database_.string();
    engine_ = std::move(engine);
    return {};
  }

  fs::path database_;
  std::uint64_t max_bytes_;
  std::mutex load_mutex_;
  bool loaded_ = false;
  std::string why_;
  std::unique_ptr<cl_engine, EngineDeleter> engine_;
};

}  // namespace

std::unique_ptr<Detector> make_clamav(const Settings& settings) {
  return std::make_unique<ClamAv>(settings);
}

}  // namespace splitfs::scan::detail
