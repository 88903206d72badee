// Holds generated text back while it could still turn into a stop string, so that neither a stop
// string nor any beginning of one ever reaches the user.
#pragma once

#include <string>
#include <vector>

namespace lockstep {

class StopFilter {
 public:
  explicit StopFilter(std::vector<std::string> stops);

  // Appends text; returns the part that is now safe to show. After a stop string appeared,
  // stopped() is true and the text before it has been returned (by this or earlier calls).
  std::string push(const std::string& text);
  // The text still held back (a proper beginning of some stop string): safe to show once
  // generation ended for another reason.
  std::string flush();

  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }  // the stop string that ended it
  const std::string& text() const { return text_; }        // everything shown or held, stop cut

 private:
  std::vector<std::string> stops_;
  std::string text_;    // all text so far (cut just before the stop string once stopped)
  size_t emitted_ = 0;  // bytes of text_ already returned
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace lockstep
