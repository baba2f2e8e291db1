// Live progress of `splitfs store`, `fetch` and `verify` on a terminal: one line per file, redrawn
// in place on stderr (name, bytes done of total, rate, time left) at most ten times a second, then
// a total line. A disabled Progress draws nothing at all, so output captured by a script or a pipe
// never holds carriage returns or escape sequences.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <splitfs/client.hpp>
#include <string>

namespace splitfs::cli {

// "1.5 MiB": binary units, one decimal above bytes.
std::string human_size(std::uint64_t bytes);
// "0:07", "1:02:03": a duration for a person.
std::string human_duration(double seconds);

class Progress {
 public:
  using Clock = std::chrono::steady_clock;

  // items: how many files the command moves, shown as [i/n] when more than one.
  Progress(bool enabled, std::size_t items);
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  // Leaves the terminal on a fresh line if a live line is still drawn.
  ~Progress();

  // Whether progress belongs on this process's terminal: stdout and stderr are both terminals
  // and TERM is not "dumb".
  static bool on_terminal();
  bool enabled() const { return enabled_; }

  // Starts the next item (label: its stored name; size: its size if known, else 0) and returns
  // the handler to give the library (empty when disabled).
  ProgressHandler begin(const std::string& label, std::uint64_t size = 0);
  // Ends the current item: erases its live line so that its result can be printed in its place.
  void end(bool ok);
  // Erases the live line, if one is drawn, so that a message can be printed; the next update
  // draws it again.
  void clear();
  // The total line (files, bytes, time, rate), once every item has ended.
  void finish();

 private:
  void update(const TransferProgress& p);
  void draw(bool force);

  bool enabled_;
  std::size_t items_;
  std::size_t index_ = 0;
  std::size_t failed_ = 0;
  std::string label_;
  bool drawn_ = false;
  Clock::time_point command_start_ = Clock::now();
  Clock::time_point item_start_;
  Clock::time_point last_draw_;
  TransferProgress current_;
  std::uint64_t moved_total_ = 0;  // bytes moved by ended items (resumed ones not counted)
  std::uint64_t bytes_total_ = 0;  // sizes of ended items
  // (time, bytes moved) of the last few seconds, for a rate that follows changes.
  std::deque<std::pair<Clock::time_point, std::uint64_t>> samples_;
};

}  // namespace splitfs::cli
