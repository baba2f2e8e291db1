// Verdicts and policies.
#include <algorithm>

#include "scan/scan.hpp"

namespace splitfs::scan {

std::string_view to_string(Severity severity) {
  switch (severity) {
    case Severity::clean:
      return "clean";
    case Severity::suspicious:
      return "suspicious";
    case Severity::malicious:
      return "malicious";
  }
  return "unknown";
}

std::string_view to_string(Action action) {
  switch (action) {
    case Action::allow:
      return "allow";
    case Action::warn:
      return "warn";
    case Action::block:
      return "block";
  }
  return "unknown";
}

std::optional<Action> parse_action(std::string_view text) {
  for (const Action a : {Action::allow, Action::warn, Action::block}) {
    if (text == to_string(a))
      return a;
  }
  return std::nullopt;
}

Action Policy::decide(Severity severity) const {
  switch (severity) {
    case Severity::clean:
      return Action::allow;
    case Severity::suspicious:
      return suspicious;
    case Severity::malicious:
      return malicious;
  }
  return Action::block;
}

void Verdict::add(Finding finding) {
  for (const Finding& f : findings) {
    if (f.detector == finding.detector && f.rule == finding.rule && f.where == finding.where)
      return;
  }
  severity = std::max(severity, finding.severity);
  // Worst first; among equals, in the order found.
  const auto at = std::find_if(findings.begin(), findings.end(),
                               [&](const Finding& f) { return f.severity < finding.severity; });
  if (findings.size() >= kMaxFindings) {
    if (at == findings.end())
      return;
    findings.pop_back();
  }
  findings.insert(std::find_if(findings.begin(), findings.end(),
                               [&](const Finding& f) { return f.severity < finding.severity; }),
                  std::move(finding));
}

void Verdict::note(std::string text) {
  if (notes.size() < kMaxFindings && std::find(notes.begin(), notes.end(), text) == notes.end())
    notes.push_back(std::move(text));
}

std::string Verdict::summary() const {
  const Finding* f = worst();
  if (!f)
    return "clean";
  std::string out = std::string(to_string(severity)) + ": " + f->detector + " " + f->rule;
  if (!f->where.empty())
    out += " (in " + f->where + ")";
  if (findings.size() > 1)
    out += " and " + std::to_string(findings.size() - 1) + " more";
  return out;
}

}  // namespace splitfs::scan
