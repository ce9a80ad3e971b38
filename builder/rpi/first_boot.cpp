#include "builder/rpi/first_boot.hpp"

#include <yaml-cpp/yaml.h>

#include <sstream>

#include "builder/rpi/pi_boot_files.hpp"
#include "core/identifiers.hpp"
#include "core/sha256.hpp"

namespace aggrik8s::builder {
namespace {

constexpr const char* firstrun_name = "firstrun.sh";

// A static interface as a NetworkManager keyfile (Raspberry Pi OS since Bookworm): each family with
// addresses is `manual`, its gateway on the first of them and its DNS servers in its own section
// (NetworkManager takes only that family's servers there). A family without addresses keeps the
// stock behaviour: IPv6 `auto` (router advertisements), IPv4 `disabled` (no DHCP next to a static
// IPv6 address the user chose).
std::string network_manager_keyfile(const NetworkSettings& n) {
  std::ostringstream out;
  out << "[connection]\nid=aggrik8s-" << n.interface << "\ntype=ethernet\ninterface-name=" << n.interface
      << "\nautoconnect-priority=100\n";
  for (int family : {4, 6}) {
    out << "\n[ipv" << family << "]\n";
    std::vector<std::string> addresses;
    for (const auto& a : n.addresses) {
      if (ip_cidr_family(a) == family) addresses.push_back(a);
    }
    if (addresses.empty()) {
      out << "method=" << (family == 4 ? "disabled" : "auto") << "\n";
      continue;
    }
    out << "method=manual\n";
    for (std::size_t i = 0; i < addresses.size(); ++i) {
      out << "address" << i + 1 << "=" << addresses[i];
      if (i == 0) {
        for (const auto& g : n.gateways) {
          if (ip_address_family(g) == family) out << "," << g;
        }
      }
      out << "\n";
    }
    std::string dns;
    for (const auto& d : n.dns) {
      if (ip_address_family(d) == family) dns += d + ";";
    }
    if (!dns.empty()) out << "dns=" << dns << "\n";
  }
  return out.str();
}

std::string firstrun_script(const Rpi5Node& node, const std::map<std::string, Secret>& password_hashes,
                            const std::string& boot_mount) {
  const SystemSettings& s = node.system;
  std::ostringstream out;
  out << "#!/bin/bash\n"
         "# Written by aggrik8s-image for node "
      << node.name
      << ". Started once by systemd.run= on the kernel command line;\n"
         "# it applies the first-boot settings, then removes itself and its command-line arguments.\n"
         "set +e\n\n";
  out << "NEW_HOSTNAME=" << shell_quote(s.hostname) << "\n"
      << "CURRENT_HOSTNAME=$(tr -d ' \\t\\n\\r' </etc/hostname)\n"
         "if [ -x /usr/lib/raspberrypi-sys-mods/imager_custom ]; then\n"
         "  /usr/lib/raspberrypi-sys-mods/imager_custom set_hostname \"$NEW_HOSTNAME\"\n"
         "else\n"
         "  echo \"$NEW_HOSTNAME\" >/etc/hostname\n"
         "  sed -i \"s/127.0.1.1.*$CURRENT_HOSTNAME/127.0.1.1\\t$NEW_HOSTNAME/g\" /etc/hosts\n"
         "fi\n\n";
  for (const auto& user : s.users) {
    std::string name = shell_quote(user.name);
    out << "# user " << user.name << "\n"
        << "id -u " << name << " >/dev/null 2>&1 || useradd -m -s /bin/bash " << name << "\n";
    if (user.sudo) out << "usermod -aG sudo,adm,video,plugdev,netdev " << name << " 2>/dev/null\n";
    if (auto hash = password_hashes.find(user.name); hash != password_hashes.end()) {
      std::string value = hash->second.reveal();
      while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
      out << "usermod -p " << shell_quote(value) << " " << name << "\n";
    }
    if (!user.ssh_authorized_keys.empty()) {
      out << "HOME_DIR=$(getent passwd " << name << " | cut -d: -f6)\n"
          << "install -o " << name << " -m 700 -d \"$HOME_DIR/.ssh\"\n"
          << "cat >\"$HOME_DIR/.ssh/authorized_keys\" <<'AGGRIK8S_KEYS'\n";
      for (const auto& key : user.ssh_authorized_keys) out << key << "\n";
      out << "AGGRIK8S_KEYS\n"
          << "chown " << name << ": \"$HOME_DIR/.ssh/authorized_keys\"\n"
          << "chmod 600 \"$HOME_DIR/.ssh/authorized_keys\"\n";
    }
    out << "\n";
  }
  if (!s.users.empty()) {
    // Bookworm asks for a user on the console at first boot unless one was configured.
    out << "systemctl disable userconfig.service >/dev/null 2>&1\nsystemctl enable getty@tty1 >/dev/null 2>&1\n\n";
  }
  if (s.ssh) {
    out << "install -m 644 /dev/null /etc/ssh/sshd_config.d/50-aggrik8s.conf\n"
        << "echo 'PasswordAuthentication " << (s.ssh_password_authentication ? "yes" : "no")
        << "' >/etc/ssh/sshd_config.d/50-aggrik8s.conf\n"
        << "systemctl enable ssh >/dev/null 2>&1\n\n";
  }
  if (s.timezone) {
    out << "rm -f /etc/localtime\necho " << shell_quote(*s.timezone) << " >/etc/timezone\n"
        << "ln -s " << shell_quote("/usr/share/zoneinfo/" + *s.timezone) << " /etc/localtime\n"
        << "dpkg-reconfigure -f noninteractive tzdata >/dev/null 2>&1\n\n";
  }
  if (s.keyboard) {
    out << "sed -i 's/^XKBLAYOUT=.*/XKBLAYOUT=\"'" << shell_quote(*s.keyboard) << "'\"/' /etc/default/keyboard\n\n";
  }
  if (s.locale) {
    out << "echo " << shell_quote("LANG=" + *s.locale) << " >/etc/default/locale\n\n";
  }
  const NetworkSettings& n = node.network;
  if (n.mode == NetworkSettings::Mode::static_address) {
    out << "install -m 600 /dev/null /etc/NetworkManager/system-connections/aggrik8s-" << n.interface << ".nmconnection\n"
        << "cat >/etc/NetworkManager/system-connections/aggrik8s-" << n.interface << ".nmconnection <<'AGGRIK8S_NET'\n"
        << network_manager_keyfile(n) << "AGGRIK8S_NET\n\n";
  }
  out << "rm -f " << shell_quote(boot_mount + "/" + firstrun_name) << "\n"
      << "sed -i 's| systemd.run[^ ]*||g; s| systemd.unit=kernel-command-line.target||g' "
      << shell_quote(boot_mount + "/cmdline.txt") << "\n"
      << "exit 0\n";
  return out.str();
}

std::string cloud_init_user_data(const Rpi5Node& node, const std::map<std::string, Secret>& password_hashes) {
  const SystemSettings& s = node.system;
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "hostname" << YAML::Value << s.hostname;
  // Without these, cloud-init resets the hostname on every boot (raspi-config#297).
  out << YAML::Key << "manage_etc_hosts" << YAML::Value << true;
  out << YAML::Key << "preserve_hostname" << YAML::Value << false;
  if (s.timezone) out << YAML::Key << "timezone" << YAML::Value << *s.timezone;
  if (s.locale) out << YAML::Key << "locale" << YAML::Value << *s.locale;
  if (s.keyboard) {
    out << YAML::Key << "keyboard" << YAML::Value << YAML::BeginMap << YAML::Key << "layout" << YAML::Value
        << *s.keyboard << YAML::EndMap;
  }
  if (!s.users.empty()) {
    out << YAML::Key << "users" << YAML::Value << YAML::BeginSeq << "default";
    for (const auto& user : s.users) {
      out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << user.name;
      out << YAML::Key << "shell" << YAML::Value << "/bin/bash";
      if (user.sudo) {
        out << YAML::Key << "groups" << YAML::Value << "sudo,adm,video,plugdev,netdev";
        out << YAML::Key << "sudo" << YAML::Value << "ALL=(ALL) NOPASSWD:ALL";
      }
      if (auto hash = password_hashes.find(user.name); hash != password_hashes.end()) {
        std::string value = hash->second.reveal();
        while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
        out << YAML::Key << "lock_passwd" << YAML::Value << false;
        out << YAML::Key << "passwd" << YAML::Value << value;
      } else {
        out << YAML::Key << "lock_passwd" << YAML::Value << true;
      }
      if (!user.ssh_authorized_keys.empty()) {
        out << YAML::Key << "ssh_authorized_keys" << YAML::Value << YAML::BeginSeq;
        for (const auto& key : user.ssh_authorized_keys) out << key;
        out << YAML::EndSeq;
      }
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  out << YAML::Key << "ssh_pwauth" << YAML::Value << s.ssh_password_authentication;
  if (s.ssh) {
    out << YAML::Key << "runcmd" << YAML::Value << YAML::BeginSeq << YAML::Flow
        << std::vector<std::string>{"systemctl", "enable", "--now", "ssh"} << YAML::EndSeq;
  }
  out << YAML::EndMap;
  return "#cloud-config\n# Written by aggrik8s-image for node " + node.name + ".\n" + out.c_str() + "\n";
}

std::string cloud_init_network_config(const NetworkSettings& n) {
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "network" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "version" << YAML::Value << 2;
  out << YAML::Key << "ethernets" << YAML::Value << YAML::BeginMap << YAML::Key << n.interface << YAML::Value
      << YAML::BeginMap;
  if (n.mode == NetworkSettings::Mode::dhcp) {
    out << YAML::Key << "dhcp4" << YAML::Value << true;
  } else {
    out << YAML::Key << "dhcp4" << YAML::Value << false;
    out << YAML::Key << "addresses" << YAML::Value << YAML::Flow << n.addresses;
    out << YAML::Key << "routes" << YAML::Value << YAML::BeginSeq;
    for (const auto& gateway : n.gateways) {
      // "::/0" rather than "default" for IPv6: cloud-init releases differ in which family they give
      // "default", and the route must match its gateway's.
      out << YAML::BeginMap << YAML::Key << "to" << YAML::Value << (ip_address_family(gateway) == 6 ? "::/0" : "default")
          << YAML::Key << "via" << YAML::Value << gateway << YAML::EndMap;
    }
    out << YAML::EndSeq;
    if (!n.dns.empty()) {
      out << YAML::Key << "nameservers" << YAML::Value << YAML::BeginMap << YAML::Key << "addresses" << YAML::Value
          << YAML::Flow << n.dns << YAML::EndMap;
    }
  }
  out << YAML::EndMap << YAML::EndMap << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace

const char* to_string(FirstBootFormat format) {
  return format == FirstBootFormat::cloud_init ? "cloud-init NoCloud" : "firstrun.sh";
}

FirstBootFormat detect_first_boot_format(bool boot_has_nocloud_files, bool rootfs_has_cloud_init) {
  return boot_has_nocloud_files || rootfs_has_cloud_init ? FirstBootFormat::cloud_init
                                                         : FirstBootFormat::firstrun_script;
}

std::string shell_quote(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

std::string boot_mount_point_from_fstab(const std::string& fstab) {
  std::istringstream in(fstab);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string device, mount, type;
    if (!(fields >> device >> mount >> type) || device.starts_with("#")) continue;
    if (type == "vfat" && (mount == "/boot" || mount == "/boot/firmware")) return mount;
  }
  return "/boot/firmware";
}

std::map<std::string, Secret> load_user_password_hashes(const Rpi5Node& node) {
  std::map<std::string, Secret> hashes;
  for (const auto& user : node.system.users) {
    if (user.password_hash) hashes.emplace(user.name, load_secret(*user.password_hash));
  }
  return hashes;
}

FirstBootPlan plan_first_boot(FirstBootFormat format, const Rpi5Node& node,
                              const std::map<std::string, Secret>& password_hashes, const std::string& boot_mount) {
  FirstBootPlan plan;
  plan.format = format;
  // Arguments an earlier build (or rpi-imager) may have left; ours are added fresh.
  plan.cmdline_remove = {"systemd.run", "systemd.run_success_action", "systemd.unit", "ds"};
  if (format == FirstBootFormat::firstrun_script) {
    plan.boot_files[firstrun_name] = firstrun_script(node, password_hashes, boot_mount);
    plan.cmdline_add = {"systemd.run=" + boot_mount + "/" + firstrun_name, "systemd.run_success_action=reboot",
                        "systemd.unit=kernel-command-line.target"};
    return plan;
  }
  std::string user_data = cloud_init_user_data(node, password_hashes);
  std::string network_config = cloud_init_network_config(node.network);
  // A new instance id whenever the settings change, so cloud-init applies them again.
  Sha256 h;
  h.update(user_data);
  h.update(network_config);
  plan.instance_id = "aggrik8s-" + node.name + "-" + h.finish().hex().substr(0, 12);
  plan.boot_files["user-data"] = user_data;
  plan.boot_files["network-config"] = network_config;
  plan.boot_files["meta-data"] = "instance-id: " + plan.instance_id + "\nlocal-hostname: " + node.system.hostname + "\n";
  plan.cmdline_add = {"ds=nocloud;i=" + plan.instance_id};
  return plan;
}

std::vector<std::string> verify_first_boot(const FirstBootPlan& plan, const std::map<std::string, std::string>& boot_files,
                                           const std::string& cmdline) {
  std::vector<std::string> problems;
  auto args = split_cmdline(cmdline);
  if (cmdline.find('\n') != cmdline.size() - 1) problems.push_back("cmdline.txt is not a single line");
  for (const auto& [name, content] : plan.boot_files) {
    auto it = boot_files.find(name);
    if (it == boot_files.end()) {
      problems.push_back(name + " is missing from the boot partition");
    } else if (it->second != content) {
      problems.push_back(name + " on the boot partition differs from what was written");
    }
  }
  for (const auto& a : plan.cmdline_add) {
    if (std::find(args.begin(), args.end(), a) == args.end()) problems.push_back("cmdline.txt lacks '" + a + "'");
  }
  if (plan.format == FirstBootFormat::cloud_init) {
    auto user_data = boot_files.find("user-data");
    if (user_data != boot_files.end()) {
      if (!user_data->second.starts_with("#cloud-config\n")) problems.push_back("user-data does not start with #cloud-config");
      try {
        YAML::Node parsed = YAML::Load(user_data->second);
        if (!parsed.IsMap() || !parsed["hostname"]) problems.push_back("user-data has no hostname");
      } catch (const YAML::Exception& e) {
        problems.push_back(std::string("user-data is not valid YAML: ") + e.what());
      }
    }
    auto meta = boot_files.find("meta-data");
    if (meta != boot_files.end() && meta->second.find("instance-id: " + plan.instance_id + "\n") == std::string::npos) {
      problems.push_back("meta-data's instance-id does not match the command line's ds=nocloud;i=");
    }
  } else {
    auto script = boot_files.find(firstrun_name);
    if (script != boot_files.end() && !script->second.starts_with("#!/bin/bash\n")) {
      problems.push_back("firstrun.sh does not start with #!/bin/bash");
    }
  }
  return problems;
}

}  // namespace aggrik8s::builder
