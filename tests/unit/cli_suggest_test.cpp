// The command line's pure helpers: edit distance and "did you mean" suggestions for a name not
// found, and the sizes and durations the progress line shows.
#include <catch2/catch.hpp>

#include "cli/progress.hpp"
#include "cli/suggest.hpp"

using splitfs::cli::did_you_mean;
using splitfs::cli::edit_distance;
using splitfs::cli::human_duration;
using splitfs::cli::human_size;
using splitfs::cli::suggestions;

TEST_CASE("edit distance counts insertions, deletions, substitutions and swaps", "[cli]") {
  CHECK(edit_distance("report.pdf", "report.pdf", 4) == 0);
  CHECK(edit_distance("report.pdf", "reprot.pdf", 4) == 1);  // adjacent swap
  CHECK(edit_distance("report.pdf", "report.pd", 4) == 1);
  CHECK(edit_distance("report.pdf", "rxport.pdf", 4) == 1);
  CHECK(edit_distance("report.pdf", "report.pdfx", 4) == 1);
  CHECK(edit_distance("", "abc", 4) == 3);
  CHECK(edit_distance("kitten", "sitting", 4) == 3);
}

TEST_CASE("edit distance stops past its limit", "[cli]") {
  CHECK(edit_distance("a", "abcdefgh", 2) == 3);
  CHECK(edit_distance("abcdefgh", "hgfedcba", 2) == 3);
}

TEST_CASE("suggestions: closest names first, a file under a folder by its last name", "[cli]") {
  const std::vector<std::string> names{"docs/report.pdf", "annual-report.pdf", "photos/cat.jpg",
                                       "notes.txt", "notes.txt.bak"};
  CHECK(suggestions("notes.tx", names) == std::vector<std::string>{"notes.txt"});
  CHECK(suggestions("report.pdf", names) == std::vector<std::string>{"docs/report.pdf"});
  CHECK(suggestions("cat.jpg", names) == std::vector<std::string>{"photos/cat.jpg"});
  CHECK(suggestions("annual-reprot.pdf", names) == std::vector<std::string>{"annual-report.pdf"});
  CHECK(suggestions("something else entirely", names).empty());
  // Closest first, at most `most`.
  CHECK(suggestions("note.txt", {"notes.txt.bak", "nope.txt", "notes.txt", "not.txt"}, 2).size() ==
        2);
  CHECK(suggestions("notes.txt.bk", {"notes.txt", "notes.txt.bak"}) ==
        std::vector<std::string>{"notes.txt.bak", "notes.txt"});
  // The name itself is never suggested.
  CHECK(suggestions("notes.txt", {"notes.txt"}).empty());
}

TEST_CASE("did you mean: one, two or three names", "[cli]") {
  CHECK(did_you_mean({}).empty());
  CHECK(did_you_mean({"a"}) == " - did you mean 'a'?");
  CHECK(did_you_mean({"a", "b"}) == " - did you mean 'a' or 'b'?");
  CHECK(did_you_mean({"a", "b", "c"}) == " - did you mean 'a', 'b' or 'c'?");
}

TEST_CASE("sizes and durations for a person", "[cli]") {
  CHECK(human_size(0) == "0 B");
  CHECK(human_size(1023) == "1023 B");
  CHECK(human_size(1024) == "1.0 KiB");
  CHECK(human_size(300000) == "293.0 KiB");
  CHECK(human_size(96ull << 20) == "96.0 MiB");
  CHECK(human_duration(0) == "0:00");
  CHECK(human_duration(7.4) == "0:07");
  CHECK(human_duration(62) == "1:02");
  CHECK(human_duration(3723) == "1:02:03");
  CHECK(human_duration(-1) == "--:--");
  CHECK(human_duration(1e9) == "--:--");
}
