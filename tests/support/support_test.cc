// Tests of the test-support library itself: real processes, a real
// nats-server on loopback, restarted on its port.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "tests/support/free_port.h"
#include "tests/support/nats_server.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace canopy::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Connects to 127.0.0.1:port and returns what the server sends first (up to
// the first newline), or nullopt if the connection is refused.
std::optional<std::string> read_greeting(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  timeval tv{};
  tv.tv_sec = 5;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return std::nullopt;
  }
  std::string line;
  char c;
  while (line.size() < 65536 && ::recv(fd, &c, 1, 0) == 1 && c != '\n') line.push_back(c);
  ::close(fd);
  return line;
}

TEST(FreePort, ReturnsABindableLoopbackPort) {
  int port = pick_free_port();
  ASSERT_GT(port, 0);
  ASSERT_LE(port, 65535);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
}

TEST(TempDir, CreatesAndRemovesTheDirectory) {
  std::filesystem::path path;
  {
    TempDir dir;
    path = dir.path();
    ASSERT_TRUE(std::filesystem::is_directory(path));
    std::filesystem::create_directories(path / "a" / "b");
    std::ofstream(dir.file("a/b/file.txt")) << "x";
    TempDir moved = std::move(dir);
    EXPECT_EQ(moved.path(), path);
    EXPECT_TRUE(dir.path().empty());
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Process, ReportsTheExitCode) {
  Process p;
  std::string error;
  ASSERT_TRUE(p.start({"/bin/sh", "-c", "exit 3"}, {}, &error)) << error;
  EXPECT_GT(p.pid(), 0);
  std::optional<int> status = p.wait_exit(seconds(10));
  ASSERT_TRUE(status.has_value());
  ASSERT_TRUE(WIFEXITED(*status)) << describe_wait_status(*status);
  EXPECT_EQ(WEXITSTATUS(*status), 3);
  EXPECT_EQ(describe_wait_status(*status), "exited with code 3");
  EXPECT_FALSE(p.running());
  // The status is kept once reaped.
  EXPECT_EQ(p.wait_exit(milliseconds(0)), status);
  EXPECT_FALSE(p.kill(SIGTERM));
}

TEST(Process, PassesEnvironmentAndRedirectsOutputToTheLog) {
  TempDir dir;
  ProcessOptions options;
  options.env = {{"CANOPY_SUPPORT_TEST", "hello"}};
  options.log_path = dir.file("out.log");
  options.cwd = dir.path().string();
  Process p;
  std::string error;
  ASSERT_TRUE(
      p.start({"sh", "-c", "echo \"$CANOPY_SUPPORT_TEST\"; pwd; echo err >&2"}, options, &error))
      << error;
  std::optional<int> status = p.wait_exit(seconds(10));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << describe_wait_status(*status);
  EXPECT_EQ(read_file(options.log_path), "hello\n" + dir.path().string() + "\nerr\n");
}

TEST(Process, KillAndTimeout) {
  Process p;
  std::string error;
  ASSERT_TRUE(p.start({"sleep", "100"}, {}, &error)) << error;
  EXPECT_TRUE(p.running());
  EXPECT_EQ(p.wait_exit(milliseconds(50)), std::nullopt);
  EXPECT_TRUE(p.kill(SIGTERM));
  std::optional<int> status = p.wait_exit(seconds(10));
  ASSERT_TRUE(status.has_value());
  ASSERT_TRUE(WIFSIGNALED(*status)) << describe_wait_status(*status);
  EXPECT_EQ(WTERMSIG(*status), SIGTERM);
}

// stop() returns once the child is stopped (its state in /proc is T), and a
// stopped child resumes with SIGCONT; a child that is gone cannot be stopped.
TEST(Process, StopWaitsUntilTheChildHasStopped) {
  Process p;
  std::string error;
  ASSERT_TRUE(p.start({"sleep", "100"}, {}, &error)) << error;
  auto state = [&] {
    std::ifstream in("/proc/" + std::to_string(p.pid()) + "/stat");
    std::string pid, comm, st;
    in >> pid >> comm >> st;
    return st;
  };
  ASSERT_TRUE(p.stop());
  EXPECT_EQ(state(), "T");
  ASSERT_TRUE(p.kill(SIGCONT));
  EXPECT_TRUE(wait_until([&] { return state() == "S" || state() == "R"; }, seconds(10)));
  EXPECT_TRUE(p.running());
  EXPECT_TRUE(p.kill(SIGKILL));
  ASSERT_TRUE(p.wait_exit(seconds(10)).has_value());
  EXPECT_FALSE(p.stop());
}

TEST(Process, DestructorKillsTheChild) {
  pid_t pid;
  {
    Process p;
    ASSERT_TRUE(p.start({"sleep", "100"}));
    pid = p.pid();
  }
  // Killed and reaped: the pid is no longer a child of ours.
  errno = 0;
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(Process, ReportsAMissingProgram) {
  Process p;
  std::string error;
  EXPECT_FALSE(p.start({"canopy-no-such-program-xyz"}, {}, &error));
  EXPECT_NE(error.find("not found"), std::string::npos) << error;
  EXPECT_FALSE(p.start({"/nonexistent/canopy-no-such-program"}, {}, &error));
  EXPECT_NE(error.find("cannot execute"), std::string::npos) << error;
  EXPECT_FALSE(p.running());
}

TEST(WaitUntil, ReturnsWhenTheConditionHoldsOrTimesOut) {
  int calls = 0;
  EXPECT_TRUE(wait_until([&] { return ++calls >= 3; }, seconds(5), milliseconds(1)));
  EXPECT_EQ(calls, 3);
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(wait_until([] { return false; }, milliseconds(60)));
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(60));
}

TEST(NatsServer, GreetsRestartsOnTheSamePortAndSurvivesKill) {
  NatsServerOptions options;
  options.max_payload = 256 * 1024;
  NatsServer server(options);
  std::string error;
  ASSERT_TRUE(server.start(&error)) << error;
  const int port = server.port();
  ASSERT_GT(port, 0);
  EXPECT_NE(server.monitor_port(), port);
  EXPECT_EQ(server.url(), "nats://127.0.0.1:" + std::to_string(port));

  std::optional<std::string> greeting = read_greeting(port);
  ASSERT_TRUE(greeting.has_value());
  EXPECT_EQ(greeting->rfind("INFO {", 0), 0u) << *greeting;
  EXPECT_NE(greeting->find("\"max_payload\":262144"), std::string::npos) << *greeting;

  EXPECT_FALSE(server.start(&error)) << "a second start while running must fail";

  EXPECT_TRUE(server.stop());
  EXPECT_FALSE(server.running());
  EXPECT_EQ(read_greeting(port), std::nullopt) << "port still open after stop()";

  ASSERT_TRUE(server.start(&error)) << error;
  EXPECT_EQ(server.port(), port);
  greeting = read_greeting(port);
  ASSERT_TRUE(greeting.has_value());
  EXPECT_EQ(greeting->rfind("INFO {", 0), 0u) << *greeting;

  server.kill();
  EXPECT_FALSE(server.running());
  EXPECT_EQ(read_greeting(port), std::nullopt) << "port still open after kill()";
  ASSERT_TRUE(server.start(&error)) << error;
  EXPECT_EQ(server.port(), port);
  EXPECT_TRUE(read_greeting(port).has_value());
}

TEST(NatsServer, AppendsExtraConfigAndReportsABadOne) {
  NatsServerOptions options;
  options.extra_config = "this is not { valid nats config";
  NatsServer server(options);
  std::string error;
  EXPECT_FALSE(server.start(&error));
  EXPECT_NE(error.find("nats-server"), std::string::npos) << error;
  EXPECT_FALSE(server.running());
}

}  // namespace
}  // namespace canopy::testing
