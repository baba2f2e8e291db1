// The S3 client's parsing, without sockets: backend URLs, credentials files, URI encoding and the
// XML fields read from answers.
#include <catch2/catch.hpp>

#include "objectstore/s3.hpp"

using namespace splitfs::objectstore;

TEST_CASE("backend URLs name a bucket, an endpoint and optional region, CA and prefix") {
  std::string error;
  auto location = parse_location(
      "s3://splitfs-https?endpoint=https://s3.internal:8443/&region=eu-west-1&ca=/etc/ca.pem"
      "&prefix=door/a",
      error);
  REQUIRE(location);
  CHECK(location->bucket == "splitfs-https");
  CHECK(location->endpoint == "https://s3.internal:8443");
  CHECK(location->region == "eu-west-1");
  CHECK(location->ca_file == "/etc/ca.pem");
  CHECK(location->prefix == "door/a/");
  CHECK(location->https());

  auto minimal = parse_location("s3://abc?endpoint=http%3A%2F%2F127.0.0.1%3A9000", error);
  REQUIRE(minimal);
  CHECK(minimal->endpoint == "http://127.0.0.1:9000");
  CHECK(minimal->region == "us-east-1");
  CHECK_FALSE(minimal->https());

  for (const char* bad :
       {"s3://Bucket?endpoint=https://h", "s3://ab?endpoint=https://h", "s3://bucket",
        "s3://bucket?endpoint=ftp://h", "s3://bucket?endpoint=https://h/path",
        "s3://bucket?endpoint=https://h&x=1", "s3://bucket?endpoint=https://h&region=EU",
        "http://bucket", "s3://bucket?endpoint=https://h&prefix=../x", "s3://bucket?endpoint",
        "s3://bucket?endpoint=%zz"}) {
    INFO(bad);
    CHECK_FALSE(parse_location(bad, error));
    CHECK_FALSE(error.empty());
  }
}

TEST_CASE("credentials files: plain names or the AWS shared file, never quoted back") {
  std::string error;
  auto plain = parse_credentials("# test\naccess_key = test:tester\nsecret_key=testing\n", error);
  REQUIRE(plain);
  CHECK(plain->access_key == "test:tester");
  CHECK(plain->secret_key == "testing");

  auto aws = parse_credentials(
      "[empty]\naws_access_key_id = only\n[default]\naws_access_key_id = AKIA\n"
      "aws_secret_access_key = s3cr3t\n",
      error);
  REQUIRE(aws);
  CHECK(aws->access_key == "AKIA");
  CHECK(aws->secret_key == "s3cr3t");

  CHECK_FALSE(parse_credentials("access_key = a\n", error));
  CHECK_FALSE(parse_credentials("access_key a\nsecret_key = hunter2\n", error));
  CHECK(error.find("hunter2") == std::string::npos);
}

TEST_CASE("URI encoding keeps unreserved characters and optionally slashes") {
  CHECK(uri_encode("packs/00ff-_.~", true) == "packs/00ff-_.~");
  CHECK(uri_encode("packs/00ff", false) == "packs%2F00ff");
  CHECK(uri_encode("a b+c=d&e", false) == "a%20b%2Bc%3Dd%26e");
  CHECK(uri_encode("\xc3\xa9", false) == "%C3%A9");
}

TEST_CASE("XML values are found in order, entities decoded") {
  const std::string xml =
      "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>packs/1</Key>"
      "<Size>10</Size></Contents><Contents><Key>a&amp;b&lt;c</Key><Size>2</Size></Contents>"
      "<NextContinuationToken>t&quot;1</NextContinuationToken></ListBucketResult>";
  CHECK(xml_values(xml, "Key") == std::vector<std::string>{"packs/1", "a&b<c"});
  CHECK(xml_values(xml, "Size") == std::vector<std::string>{"10", "2"});
  CHECK(xml_values(xml, "NextContinuationToken") == std::vector<std::string>{"t\"1"});
  CHECK(xml_values(xml, "Missing").empty());
  CHECK(xml_values("<Key>unterminated", "Key").empty());
}

TEST_CASE("object store errors have readable messages") {
  CHECK(make_error_code(Errc::not_found).message() == "no such object");
  CHECK(std::error_code(Errc::unavailable).category().name() == std::string("splitfs.objectstore"));
}
