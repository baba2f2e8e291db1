#include "common/thread_cache.hpp"

#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <thread>
#include <vector>

namespace splitfs {

struct ThreadCache::State {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<Job> tasks;
  std::size_t idle = 0;  // threads not working on a task
  bool stop = false;
  std::vector<std::thread> threads;
};

ThreadCache::ThreadCache() : state_(std::make_unique<State>()), process_(::getpid()) {}

ThreadCache::~ThreadCache() {
  State& s = current();
  {
    std::lock_guard lock(s.mutex);
    s.stop = true;
  }
  s.ready.notify_all();
  for (auto& t : s.threads)
    t.join();
}

ThreadCache::State& ThreadCache::current() {
  std::lock_guard lock(adopt_);
  if (const pid_t self = ::getpid(); self != process_) {
    // Forked since: the state's threads are the parent's and do not run here (their handles can
    // be neither joined nor detached), and its condition variable still counts their waits, so
    // that a signal could go to none of ours, and destroying it would wait for them. It is left
    // as it is, never destroyed, and this process starts afresh.
    [[maybe_unused]] State* parents = state_.release();
    state_ = std::make_unique<State>();
    process_ = self;
  }
  return *state_;
}

std::size_t ThreadCache::size() {
  State& s = current();
  std::lock_guard lock(s.mutex);
  return s.threads.size();
}

void ThreadCache::post(Job job) {
  State& s = current();
  std::lock_guard lock(s.mutex);
  s.tasks.push_back(std::move(job));
  // Each waiting task needs an idle thread of its own, or a new one.
  if (s.idle >= s.tasks.size()) {
    s.ready.notify_one();
    return;
  }
  s.threads.emplace_back([&s] { serve(s); });
}

void ThreadCache::serve(State& s) {
  std::unique_lock lock(s.mutex);
  ++s.idle;
  for (;;) {
    s.ready.wait(lock, [&s] { return s.stop || !s.tasks.empty(); });
    if (s.tasks.empty())
      break;  // stopped
    Job job = std::move(s.tasks.front());
    s.tasks.pop_front();
    --s.idle;
    lock.unlock();
    job.work();
    lock.lock();
    ++s.idle;
    lock.unlock();
    job.finish();
    lock.lock();
  }
  --s.idle;
}

}  // namespace splitfs
