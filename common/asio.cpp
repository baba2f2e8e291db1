// The compiled parts of Boost.Asio and Boost.Beast, built once here instead of in every file that
// includes them (BOOST_ASIO_SEPARATE_COMPILATION and BOOST_BEAST_SEPARATE_COMPILATION are set for
// the whole project): this halves the compile time of each server and transport file.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
