// Threads kept between tasks. std::async(std::launch::async) starts and ends a thread for every
// call, which costs more than the small request it carries (a file's commit to one server takes
// about as long as starting the thread for it). A task here goes to an idle kept thread, or to a
// new one when none is idle: a task never waits for another to finish, so tasks may start and
// wait for other tasks. Threads stay until the cache goes; their number is the most tasks that
// ever ran at once. A child process after fork() has none of its parent's threads: the cache
// forgets them there and starts its own.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>

namespace splitfs {

// A task's result; like std::async's future, it waits for the task when it goes unread.
template <class R>
class Joined {
 public:
  Joined() = default;
  explicit Joined(std::future<R> future) : future_(std::move(future)) {}
  ~Joined() {
    if (future_.valid())
      future_.wait();
  }
  Joined(Joined&&) noexcept = default;
  Joined& operator=(Joined&& other) noexcept {
    if (future_.valid())
      future_.wait();
    future_ = std::move(other.future_);
    return *this;
  }
  Joined(const Joined&) = delete;
  Joined& operator=(const Joined&) = delete;

  bool valid() const { return future_.valid(); }
  R get() { return future_.get(); }
  void wait() const { future_.wait(); }

 private:
  std::future<R> future_;
};

class ThreadCache {
  // A task in two steps: the work, then handing over its result. Between the two, the thread
  // already counts as idle, so that a caller that waited for the result and hands over its next
  // task finds it: else each such task could start one more thread.
  struct Job {
    std::function<void()> work;
    std::function<void()> finish;
  };

  template <class R, class F>
  struct Call {
    explicit Call(F f) : fn(std::move(f)) {}
    void work() {
      try {
        if constexpr (std::is_void_v<R>)
          fn();
        else
          value.emplace(fn());
      } catch (...) {
        error = std::current_exception();
      }
    }
    void finish() {
      if (error)
        promise.set_exception(error);
      else if constexpr (std::is_void_v<R>)
        promise.set_value();
      else
        promise.set_value(std::move(*value));
    }
    F fn;
    std::promise<R> promise;
    std::optional<std::conditional_t<std::is_void_v<R>, int, R>> value;
    std::exception_ptr error;
  };

 public:
  ThreadCache();
  // Every task handed out has been waited for by then (Joined); joins the threads.
  ~ThreadCache();
  ThreadCache(const ThreadCache&) = delete;
  ThreadCache& operator=(const ThreadCache&) = delete;

  template <class F>
  [[nodiscard]] Joined<std::invoke_result_t<F&>> run(F f) {
    using R = std::invoke_result_t<F&>;
    auto call = std::make_shared<Call<R, F>>(std::move(f));
    Joined<R> result(call->promise.get_future());
    post(Job{[call] { call->work(); }, [call] { call->finish(); }});
    return result;
  }

  // Threads kept so far.
  std::size_t size();

 private:
  struct State;

  State& current();
  void post(Job job);
  static void serve(State& state);

  std::mutex adopt_;  // guards state_ and process_
  std::unique_ptr<State> state_;
  pid_t process_;  // the process state_'s threads run in
};

}  // namespace splitfs
