// The thread cache: results and exceptions come back, threads are kept and reused, tasks may wait
// for tasks they start, and an unread result still waits for its task.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <functional>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "common/thread_cache.hpp"

using splitfs::Joined;
using splitfs::ThreadCache;

TEST_CASE("thread cache: a result or an exception comes back", "[thread_cache]") {
  ThreadCache threads;
  auto answer = threads.run([] { return 42; });
  CHECK(answer.get() == 42);
  auto failing = threads.run([]() -> int { throw std::runtime_error("no"); });
  CHECK_THROWS_AS(failing.get(), std::runtime_error);
}

TEST_CASE("thread cache: one task at a time needs one thread", "[thread_cache]") {
  ThreadCache threads;
  int sum = 0;
  int elsewhere = 0;
  for (int i = 0; i < 200; ++i) {
    auto r = threads.run([i] { return std::make_pair(i, std::this_thread::get_id()); });
    const auto [value, id] = r.get();
    sum += value;
    elsewhere += id != std::this_thread::get_id() ? 1 : 0;
  }
  CHECK(sum == 199 * 200 / 2);
  CHECK(elsewhere == 200);
  // One thread, kept and reused, where std::async would have started 200: a thread counts as
  // idle again before its caller has the result.
  CHECK(threads.size() == 1);
}

TEST_CASE("thread cache: tasks that wait for tasks they start finish", "[thread_cache]") {
  ThreadCache threads;
  std::function<int(int)> depth = [&](int n) -> int {
    if (n == 0)
      return 0;
    auto inner = threads.run([&, n] { return depth(n - 1); });
    return inner.get() + 1;
  };
  auto outer = threads.run([&] { return depth(16); });
  CHECK(outer.get() == 16);
  CHECK(threads.size() == 17);
}

TEST_CASE("thread cache: tasks at once run at once", "[thread_cache]") {
  ThreadCache threads;
  std::atomic<int> arrived{0};
  std::vector<Joined<void>> running;
  running.reserve(4);
  for (int i = 0; i < 4; ++i) {
    running.push_back(threads.run([&] {
      ++arrived;
      // Each waits for all four: only true if all run together.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (arrived.load() < 4 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
    }));
  }
  for (auto& r : running)
    r.get();
  CHECK(arrived.load() == 4);
}

TEST_CASE("thread cache: a result nobody reads still waits for its task", "[thread_cache]") {
  ThreadCache threads;
  std::atomic<bool> done{false};
  {
    auto unread = threads.run([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      done = true;
    });
  }
  CHECK(done.load());
}

TEST_CASE("thread cache: a child process after fork() runs tasks on threads of its own",
          "[thread_cache]") {
  std::optional<ThreadCache> threads(std::in_place);
  CHECK(threads->run([] { return 1; }).get() == 1);  // a kept thread, idle, in this process
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Here the kept thread does not exist: a task handed to it would never run, and its handle
    // can be neither joined nor detached when the cache goes.
    auto r = threads->run([] { return 7; });
    const bool ran = r.valid() && r.get() == 7;
    threads.reset();
    ::_exit(ran ? 0 : 1);
  }
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  pid_t done = 0;
  while ((done = ::waitpid(child, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (done == 0) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
  }
  REQUIRE(done == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
