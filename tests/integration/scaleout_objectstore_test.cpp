// The S3 client against the real Swift the ctest fixture started: put, ranged get, list, delete,
// multipart above the threshold, refused credentials, an unverifiable certificate and a store
// that is not there.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "objectstore/s3.hpp"
#include "tests/support/random_bytes.hpp"
#include "tests/support/servers.hpp"

using namespace splitfs;
using splitfs::testing::random_bytes;
using splitfs::testing::test_engines;

namespace {

objectstore::Location location_for(const std::string& bucket) {
  const auto& engines = test_engines();
  std::string error;
  auto location = objectstore::parse_location(
      "s3://" + bucket + "?endpoint=" + engines.s3_endpoint + "&ca=" + engines.ca_file, error);
  REQUIRE(location);
  return *location;
}

// The engines' env files export the credentials first.
objectstore::Credentials credentials() {
  test_engines();
  return objectstore::load_credentials({});
}

std::string fresh_bucket() {
  static std::mt19937_64 rng(std::random_device{}());
  return "os" + std::to_string(rng() % 1000000000000ULL);
}

}  // namespace

TEST_CASE("S3 client: put, ranged get, list and delete against Swift", "[scaleout][objectstore]") {
  objectstore::Client client(location_for(fresh_bucket()), credentials());
  REQUIRE_FALSE(client.create_bucket());
  REQUIRE_FALSE(client.create_bucket());  // already ours

  const Bytes a = random_bytes(300000, 1);
  const Bytes b = random_bytes(12345, 2);
  const ByteView parts[] = {a, b};
  REQUIRE_FALSE(client.put_object("packs/0001", parts));

  Bytes out;
  REQUIRE_FALSE(client.get_range("packs/0001", 299990, 20, out));
  REQUIRE(out.size() == 20);
  CHECK(std::equal(out.begin(), out.begin() + 10, a.end() - 10));
  CHECK(std::equal(out.begin() + 10, out.end(), b.begin()));

  REQUIRE_FALSE(client.get_object("packs/0001", out));
  REQUIRE(out.size() == a.size() + b.size());
  CHECK(std::equal(b.begin(), b.end(), out.begin() + static_cast<std::ptrdiff_t>(a.size())));

  const ByteView small[] = {ByteView(b).first(10)};
  REQUIRE_FALSE(client.put_object("packs/0002", small));
  REQUIRE_FALSE(client.put_object("other/x", small));
  std::vector<objectstore::ObjectInfo> listed;
  REQUIRE_FALSE(client.list("packs/", listed));
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].key == "packs/0001");
  CHECK(listed[0].size == a.size() + b.size());
  CHECK(listed[1].key == "packs/0002");
  CHECK(listed[1].size == 10);

  REQUIRE_FALSE(client.delete_object("packs/0001"));
  REQUIRE_FALSE(client.delete_object("packs/0001"));  // absent already
  CHECK(client.get_range("packs/0001", 0, 10, out) == objectstore::Errc::not_found);
  REQUIRE_FALSE(client.list("packs/", listed));
  CHECK(listed.size() == 1);
  // A range past the end is refused, never padded.
  CHECK(client.get_range("packs/0002", 5, 10, out));
}

TEST_CASE("S3 client: multipart upload above the threshold", "[scaleout][objectstore]") {
  objectstore::Options options;
  options.multipart_threshold = 6u << 20;
  options.part_bytes = 5u << 20;  // S3's smallest part
  objectstore::Client client(location_for(fresh_bucket()), credentials(), options);
  REQUIRE_FALSE(client.create_bucket());
  const Bytes a = random_bytes(7u << 20, 3);
  const Bytes b = random_bytes((4u << 20) + 17, 4);
  const ByteView parts[] = {a, b};
  REQUIRE_FALSE(client.put_object("big", parts));
  Bytes out;
  REQUIRE_FALSE(client.get_object("big", out));
  REQUIRE(out.size() == a.size() + b.size());
  CHECK(std::equal(a.begin(), a.end(), out.begin()));
  CHECK(std::equal(b.begin(), b.end(), out.begin() + static_cast<std::ptrdiff_t>(a.size())));
  REQUIRE_FALSE(client.get_range("big", (5u << 20) - 3, 6, out));
  CHECK(std::equal(out.begin(), out.end(), a.begin() + (5 << 20) - 3));
}

TEST_CASE("S3 client: wrong secret, unknown CA and no store are errors, not hangs",
          "[scaleout][objectstore]") {
  const std::string bucket = fresh_bucket();
  {
    objectstore::Client client(location_for(bucket), credentials());
    REQUIRE_FALSE(client.create_bucket());
  }
  objectstore::Credentials wrong = credentials();
  wrong.secret_key += "x";
  objectstore::Client refused(location_for(bucket), wrong);
  Bytes out;
  CHECK(refused.get_range("k", 0, 1, out) == objectstore::Errc::denied);

  objectstore::Location no_ca = location_for(bucket);
  no_ca.ca_file = "/etc/ssl/certs/ca-certificates.crt";  // the system's CAs do not know it
  objectstore::Client unverified(no_ca, credentials());
  CHECK(unverified.get_range("k", 0, 1, out) == objectstore::Errc::denied);

  objectstore::Options quick;
  quick.attempts = 2;
  quick.first_backoff = std::chrono::milliseconds(10);
  objectstore::Location nowhere = location_for(bucket);
  nowhere.endpoint = "https://127.0.0.1:1";
  objectstore::Client absent(nowhere, credentials(), quick);
  CHECK(absent.get_range("k", 0, 1, out) == objectstore::Errc::unavailable);
}
