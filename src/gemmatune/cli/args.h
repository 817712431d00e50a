// Command-line options of one subcommand. A command declares every option it reads (with a
// default and help text), then calls finish(): that prints --help, or rejects unknown options
// and missing required ones with a clear message.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace gt::cli {

class Args {
 public:
  Args(std::string command, std::string summary, int argc, char** argv);

  std::string str(const std::string& name, const std::string& def, const std::string& help);
  std::string required(const std::string& name, const std::string& help);
  int64_t integer(const std::string& name, int64_t def, const std::string& help);
  double real(const std::string& name, double def, const std::string& help);
  bool flag(const std::string& name, const std::string& help);
  bool given(const std::string& name) const { return values_.count(name) != 0; }
  // Every value given for a repeatable option, in order.
  std::vector<std::string> all(const std::string& name, const std::string& help);
  void positional_help(const std::string& usage) { positional_usage_ = usage; }

  // Returns true when --help was asked for (the help text has been printed).
  bool finish();
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::string command_, summary_, positional_usage_;
  std::multimap<std::string, std::string> values_;
  std::vector<std::string> positional_;
  std::vector<std::string> flags_given_;
  struct Opt { std::string name, def, help; bool is_flag, is_required; };
  std::vector<Opt> declared_;
  std::vector<std::string> missing_;
  bool help_ = false;
  const std::string* raw(const std::string& name) const;
};

}  // namespace gt::cli
