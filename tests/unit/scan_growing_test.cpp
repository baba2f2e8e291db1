// GrowingFileSource: reads wait for the writer, and stop waiting once it writes no more.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <splitfs/errors.hpp>
#include <thread>

#include "scan/scan.hpp"

using splitfs::Bytes;
using splitfs::scan::GrowingFileSource;

namespace {

struct TempFile {
  std::FILE* file = std::tmpfile();
  ~TempFile() { std::fclose(file); }
  int fd() const { return ::fileno(file); }
};

}  // namespace

TEST_CASE("a read waits until the bytes it asks for are written") {
  TempFile tmp;
  REQUIRE(tmp.file != nullptr);
  const Bytes data(1000, 0x5a);
  GrowingFileSource source(tmp.fd(), data.size(), "growing");
  std::thread writer([&] {
    for (std::size_t at = 0; at < data.size(); at += 100) {
      REQUIRE(::pwrite(tmp.fd(), data.data() + at, 100, static_cast<off_t>(at)) == 100);
      source.written(at + 100);
    }
  });
  Bytes out(600);
  CHECK(source.read_at(400, out) == 600);
  writer.join();
  CHECK(out == Bytes(600, 0x5a));
  CHECK(source.read_at(1000, out) == 0);
}

TEST_CASE("once abandoned, bytes written can be read and a read past them throws") {
  TempFile tmp;
  REQUIRE(tmp.file != nullptr);
  const Bytes data(300, 0x11);
  REQUIRE(::pwrite(tmp.fd(), data.data(), data.size(), 0) == 300);
  GrowingFileSource source(tmp.fd(), 1000, "growing");
  source.written(300);
  std::thread stopper([&] { source.abandon(); });
  Bytes out(200);
  CHECK(source.read_at(100, out) == 200);
  stopper.join();
  CHECK_THROWS_AS(source.read_at(200, out), splitfs::LocalIoError);
}
